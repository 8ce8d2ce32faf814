"""`touchstone export`: a training run's best weights to `model.onnx` and its card `model.json`.

Export is also where the decision policy is fitted: the `calib` split is scored by the ONNX
model that will be served (int8 included), so temperature, item weights and thresholds describe
the very model that serving runs. The held-out split (`test`, else `val`) then gives the card's
metrics and the report in `MODEL_DIR/evaluation/`.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from touchstone.data.manifest import Manifest, PhotoRecord, load_manifest
from touchstone.evaluation.evaluate import DecisionPolicy, evaluate, fit_policy
from touchstone.evaluation.report import write_report
from touchstone.evaluation.scoring import PhotoScores, score_records
from touchstone.evaluation.thresholds import Targets
from touchstone.imaging import Preprocessing
from touchstone.inference import open_session
from touchstone.model_card import (
    CARD_FORMAT,
    ONNX_FILE,
    Calibration,
    CardPreprocessing,
    CardThresholds,
    ItemRule,
    ModelCard,
    OnnxInfo,
    PhotoCalibration,
    ThresholdTargets,
    file_sha256,
)
from touchstone.registry import log_export
from training import checkpoints
from training.config import TrainConfig
from training.loop import split_records
from training.models import AuthenticityNet
from training.tracking import git_commit
from training.weights import create_backbone

OPSET = 17
INPUT_NAME = "pixels"
OUTPUT_NAME = "log_odds"
PARITY_TOLERANCE = 1e-4
MAX_INT8_ITEM_ACCURACY_DROP = 0.005  # 0.5 points


class ExportError(RuntimeError):
    """The run cannot be exported as asked; the message says why."""


@dataclass
class TrainedModel:
    net: AuthenticityNet
    config: TrainConfig
    preprocessing: Preprocessing
    regions: tuple[str, ...]
    payload: dict[str, Any]


@dataclass
class ExportResult:
    model_dir: Path
    card: ModelCard
    metrics: dict[str, Any]
    parity_max_abs_diff: float
    report: Path
    registered_version: str | None = None

    @property
    def metrics_split(self) -> str:
        return str(self.card.metrics["split"])


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


def onnx_predict(path: Path):  # -> touchstone.evaluation.scoring.Predict
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


class _CalibrationImages:
    """onnxruntime's CalibrationDataReader over a few train photos."""

    def __init__(self, records: list[PhotoRecord], preprocessing: Preprocessing) -> None:
        from touchstone.evaluation.scoring import prepare_photo

        arrays = [a for a in (prepare_photo(r, preprocessing) for r in records) if a is not None]
        self.batches = iter(
            [{INPUT_NAME: np.stack(arrays[i : i + 8])} for i in range(0, len(arrays), 8)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def quantize_int8(
    fp32: Path, out: Path, records: list[PhotoRecord], preprocessing: Preprocessing
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            _CalibrationImages(records, preprocessing),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )


def _splits(manifest: Manifest, config: TrainConfig) -> dict[str, list[PhotoRecord]]:
    """The manifest's own splits, or the ones its training run drew (same seed, same split).
    A manifest made for calibration alone (calib and test, no train) is fine."""
    labelled = [r for r in manifest.records if r.label is not None]
    if labelled and all(r.split for r in labelled):
        splits: dict[str, list[PhotoRecord]] = {}
        for record in labelled:
            splits.setdefault(record.split or "", []).append(record)
        return splits
    return split_records(manifest, config)


def calibration_sample(records: list[PhotoRecord], count: int, seed: int) -> list[PhotoRecord]:
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(records), size=min(count, len(records)), replace=False)
    return [records[i] for i in sorted(chosen)]


def export_run(
    run_dir: Path,
    out: Path,
    data: Path | None = None,
    quantize: str | None = None,
    force: bool = False,
    targets: Targets | None = None,
    console: Console | None = None,
    register: bool = True,
) -> ExportResult:
    console = console or Console()
    targets = targets or Targets()
    trained = load_trained(run_dir)
    manifest_path = Path(data) if data else Path(trained.payload.get("manifest_path") or "")
    if not manifest_path.is_file():
        raise ExportError("no manifest to calibrate on: pass --data MANIFEST")
    manifest = load_manifest(manifest_path, trained.regions)
    splits = _splits(manifest, trained.config)
    if not splits.get("calib"):
        raise ExportError(f"{manifest_path}: no labelled photos in the calib split")
    held_out_name = "test" if splits.get("test") else "val"
    size = trained.preprocessing.input_size

    out = Path(out)
    if (out / ONNX_FILE).exists() and not force:
        raise ExportError(f"{out} already holds a model: choose another --out or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(trained.net, size, fp32)
        worst = check_parity(trained.net, fp32, size)
        console.print(f"parity: ONNX Runtime vs torch, largest |difference| {worst:.2e}")
        policy, held_out, scores = _fit_and_evaluate(
            fp32, trained, splits, held_out_name, targets, console
        )
        quantization: dict[str, Any] = {}
        shipped = fp32
        if quantize == "int8":
            int8 = Path(tmp) / "int8.onnx"
            # Activation ranges from photos the thresholds are not fitted on, where there are.
            pool = splits.get("train") or splits.get("val") or splits["calib"]
            sample = calibration_sample(pool, 128, trained.config.seed)
            quantize_int8(fp32, int8, sample, trained.preprocessing)
            policy8, held_out8, scores8 = _fit_and_evaluate(
                int8, trained, splits, held_out_name, targets, console
            )
            change = held_out8["item"]["accuracy"] - held_out["item"]["accuracy"]
            quantization = {
                "method": "onnxruntime static, QDQ, per-channel int8 weights, uint8 activations",
                "calibration_photos": len(sample),
                "split": held_out_name,
                "item_accuracy_fp32": held_out["item"]["accuracy"],
                "item_accuracy_int8": held_out8["item"]["accuracy"],
                "item_accuracy_change": change,
                "photo_accuracy_fp32": held_out["photo"]["accuracy"],
                "photo_accuracy_int8": held_out8["photo"]["accuracy"],
                "fp32_bytes": fp32.stat().st_size,
                "int8_bytes": int8.stat().st_size,
            }
            console.print(
                f"int8: item accuracy {held_out8['item']['accuracy']:.3f} against fp32 "
                f"{held_out['item']['accuracy']:.3f} ({change * 100:+.1f} points)"
            )
            if change < -MAX_INT8_ITEM_ACCURACY_DROP and not force:
                raise ExportError(
                    f"int8 loses {-change * 100:.1f} points of item accuracy on {held_out_name} "
                    f"(allowed {MAX_INT8_ITEM_ACCURACY_DROP * 100:.1f}); pass --force to ship it"
                )
            policy, held_out, scores, shipped = policy8, held_out8, scores8, int8
        shutil.copyfile(shipped, out / ONNX_FILE)

    card = _card(trained, manifest, splits, policy, held_out, held_out_name, quantization, out)
    card.write(out)
    report = write_report(
        held_out, policy, out / "evaluation", f"{card.name}: {held_out_name} split"
    )["report"]
    result = ExportResult(out, card, held_out, worst, report)
    if register and trained.config.tracking.enabled:
        result.registered_version = log_export(
            run_dir, out, trained.config.tracking.registered_model, trained.config.tracking.uri
        )
    del scores
    return result


def _fit_and_evaluate(
    onnx_path: Path,
    trained: TrainedModel,
    splits: dict[str, list[PhotoRecord]],
    held_out_name: str,
    targets: Targets,
    console: Console,
) -> tuple[DecisionPolicy, dict[str, Any], PhotoScores]:
    predict = onnx_predict(onnx_path)
    calib = score_records(
        splits["calib"],
        predict,
        trained.preprocessing,
        trained.regions,
        console=console,
        description="scoring calib",
    )
    policy = fit_policy(calib, targets)
    held_out = score_records(
        splits[held_out_name],
        predict,
        trained.preprocessing,
        trained.regions,
        console=console,
        description=f"scoring {held_out_name}",
    )
    return policy, evaluate(held_out, policy), held_out


def _card(
    trained: TrainedModel,
    manifest: Any,
    splits: dict[str, list[PhotoRecord]],
    policy: DecisionPolicy,
    held_out: dict[str, Any],
    held_out_name: str,
    quantization: dict[str, Any],
    out: Path,
) -> ModelCard:
    prep = trained.preprocessing
    onnx_sha = file_sha256(out / ONNX_FILE)
    decisions = held_out["decisions"]
    metrics = {
        "split": held_out_name,
        "photo_accuracy": held_out["photo"]["accuracy"],
        "photo_auc": held_out["photo"]["auc"],
        "item_accuracy": held_out["item"]["accuracy"],
        "item_auc": held_out["item"]["auc"],
        "item_ece": held_out["item"]["calibration_after"]["ece"],
        "coverage": decisions["coverage"],
        "selective_accuracy": decisions["selective_accuracy"],
        "false_authentic": decisions["false_authentic"],
        "false_counterfeit": decisions["false_counterfeit"],
        "aurc": held_out["risk_coverage"]["aurc"],
        "per_region_auc": {r: held_out["photo"].get(f"{r}/auc") for r in trained.regions},
        "training_validation": trained.payload.get("metrics", {}),
    }
    if quantization:
        metrics["quantization"] = quantization
    return ModelCard(
        format=CARD_FORMAT,
        name=trained.config.tracking.registered_model,
        version=onnx_sha[:12],
        architecture=trained.payload["arch"],
        regions=trained.regions,
        categories=_categories(trained, splits),
        preprocessing=CardPreprocessing(
            input_size=prep.input_size,
            mean=prep.mean,
            std=prep.std,
            interpolation=prep.interpolation,
            crop_pct=prep.crop_pct,
        ),
        onnx=OnnxInfo(
            sha256=onnx_sha,
            opset=OPSET,
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            quantization="int8" if quantization else "none",
        ),
        calibration=Calibration(
            photo=PhotoCalibration(temperature=policy.temperature),
            item=ItemRule(
                region_weights=dict(
                    zip(policy.aggregation.regions, policy.aggregation.weights, strict=True)
                ),
                bias=policy.aggregation.bias,
            ),
        ),
        thresholds=CardThresholds(
            authentic_at=policy.thresholds.authentic_at,
            counterfeit_at=policy.thresholds.counterfeit_at,
            targets=ThresholdTargets(
                false_authentic=policy.targets.false_authentic,
                false_counterfeit=policy.targets.false_counterfeit,
                confidence=policy.targets.confidence,
            ),
            evidence=policy.evidence,
        ),
        metrics=metrics,
        data={
            "manifest": str(manifest.path),
            "manifest_sha256": manifest.content_hash(),
            "trained_on_manifest_sha256": trained.payload.get("manifest_sha256"),
            "photos": {split: len(records) for split, records in splits.items()},
            "items": {
                split: len({r.item_id for r in records}) for split, records in splits.items()
            },
        },
        git_commit=git_commit(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        training_run={
            "run_dir": str(Path(trained.payload.get("run_dir", "")) or ""),
            "epoch": trained.payload.get("epoch"),
            "mlflow_run_id": trained.payload.get("mlflow_run_id"),
        },
    )


def _categories(trained: TrainedModel, splits: dict[str, list[PhotoRecord]]) -> tuple[str, ...]:
    """The categories the model was trained on: serving sends others to people."""
    trained_on = trained.payload.get("categories")
    if trained_on:
        return tuple(trained_on)
    records = splits.get("train") or [r for rs in splits.values() for r in rs]
    return tuple(sorted({r.category for r in records if r.category}))
