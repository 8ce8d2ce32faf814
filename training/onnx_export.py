"""From a run's best checkpoint to an ONNX graph that computes the same numbers: the trained
network loaded back, exported with a dynamic batch, and checked against torch."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from touchstone.evaluation.scoring import Predict
from touchstone.imaging import Preprocessing
from touchstone.inference import open_session
from training import checkpoints
from training.config import TrainConfig
from training.models import AuthenticityNet
from training.weights import create_backbone

OPSET = 17
INPUT_NAME = "pixels"
OUTPUT_NAME = "log_odds"
PARITY_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The run cannot be exported as asked; the message says why."""


@dataclass
class TrainedModel:
    net: AuthenticityNet
    config: TrainConfig
    preprocessing: Preprocessing
    regions: tuple[str, ...]
    payload: dict[str, Any]


def load_trained(run_dir: Path) -> TrainedModel:
    path = Path(run_dir) / "checkpoints" / checkpoints.BEST
    if not path.exists():
        raise ExportError(f"{run_dir}: no {path.name}; is it a finished training run?")
    payload = checkpoints.load(path)
    config = TrainConfig.model_validate(payload["config"])
    regions = tuple(payload["regions"])
    # No pretrained weights: the checkpoint holds all of them.
    backbone = create_backbone(payload["arch"], "none", None, config.model.drop_rate)
    net = AuthenticityNet(backbone, regions)
    net.load_state_dict(payload["model"])
    prep = payload["preprocessing"]
    preprocessing = Preprocessing(
        prep["input_size"],
        tuple(prep["mean"]),
        tuple(prep["std"]),
        prep["interpolation"],
        prep["crop_pct"],
    )
    return TrainedModel(net.eval(), config, preprocessing, regions, payload)


def onnx_predict(path: Path) -> Predict:
    session = open_session(path)

    def predict(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {INPUT_NAME: batch.astype(np.float32)})[0]

    return predict


def export_onnx(net: torch.nn.Module, input_size: int, path: Path) -> None:
    example = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        # The TorchScript exporter: exact for these CNNs (the parity check proves it each time)
        # and it needs no onnxscript; torch.export's exporter is the deprecation's successor.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net.eval(),
            (example,),
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            external_data=False,
        )


def check_parity(
    net: torch.nn.Module, onnx_path: Path, input_size: int, tolerance: float = PARITY_TOLERANCE
) -> float:
    """ONNX Runtime against torch on fixed inputs at batch 1 and 8; raise past `tolerance`."""
    generator = torch.Generator().manual_seed(0)
    session = open_session(onnx_path)
    worst = 0.0
    for batch in (1, 8):
        inputs = torch.randn(batch, 3, input_size, input_size, generator=generator)
        with torch.no_grad():
            expected = net.eval()(inputs).numpy()
        actual = session.run(None, {INPUT_NAME: inputs.numpy()})[0]
        if actual.shape != expected.shape:
            raise ExportError(f"parity: ONNX output {actual.shape}, torch {expected.shape}")
        worst = max(worst, float(np.abs(actual - expected).max()))
    if not worst <= tolerance:  # also catches NaN
        raise ExportError(
            f"parity check failed: ONNX Runtime and torch differ by {worst:.3g} on the logits "
            f"(allowed {tolerance:g}); the exported graph does not compute the trained model"
        )
    return worst
