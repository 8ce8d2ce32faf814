"""`touchstone export`: a training run's best weights to `model.onnx` and its card `model.json`.

Export is also where the decision policy is fitted: the `calib` split is scored by the ONNX
model that will be served (int8 included), so temperature, item weights and thresholds describe
the very model that serving runs. The held-out split (`test`, else `val`) then gives the card's
metrics and the report in `MODEL_DIR/evaluation/`. The steps live beside it: `onnx_export`
(export and parity), `quantization` (int8), `card_writing` (policy and card).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from touchstone.data.manifest import Manifest, PhotoRecord, load_manifest
from touchstone.evaluation.policy import DecisionPolicy, policy_from_card
from touchstone.evaluation.report import write_report
from touchstone.evaluation.results import Evaluation
from touchstone.evaluation.scoring import PhotoScores
from touchstone.evaluation.thresholds import Targets
from touchstone.model_card import ONNX_FILE, ModelCard
from touchstone.registry import log_export
from training.card_writing import build_card, calibration_splits, fit_and_evaluate
from training.onnx_export import (
    ExportError,
    TrainedModel,
    check_parity,
    export_onnx,
    load_trained,
)
from training.quantization import quantize_and_refit

# What callers of `training.export` have always found here.
__all__ = [
    "ExportError",
    "ExportResult",
    "TrainedModel",
    "check_parity",
    "export_onnx",
    "export_run",
    "load_trained",
]


@dataclass
class ExportResult:
    model_dir: Path
    card: ModelCard
    metrics: Evaluation
    parity_max_abs_diff: float
    report: Path
    registered_version: str | None = None
    scores: dict[str, PhotoScores] | None = None  # by split, as the shipped model scored them

    @property
    def policy(self) -> DecisionPolicy:
        return policy_from_card(self.card)

    @property
    def metrics_split(self) -> str:
        return str(self.card.metrics["split"])


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
    manifest, splits = _calibration_data(trained, data)
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
        fitted = fit_and_evaluate(fp32, trained, splits, held_out_name, targets, console)
        quantization = {}
        if quantize == "int8":
            int8 = Path(tmp) / "int8.onnx"
            fitted, quantization = quantize_and_refit(
                fitted, int8, trained, splits, held_out_name, targets, force, console
            )
        shutil.copyfile(fitted.onnx_path, out / ONNX_FILE)
    card = build_card(trained, manifest, splits, fitted, held_out_name, quantization, out)
    card.write(out)
    title = f"{card.name}: {held_out_name} split"
    report = write_report(fitted.held_out, fitted.policy, out / "evaluation", title)["report"]
    result = ExportResult(out, card, fitted.held_out, worst, report, scores=fitted.scores)
    if register and trained.config.tracking.enabled:
        tracking = trained.config.tracking
        result.registered_version = log_export(
            run_dir, out, tracking.registered_model, tracking.uri
        )
    return result


def _calibration_data(
    trained: TrainedModel, data: Path | None
) -> tuple[Manifest, dict[str, list[PhotoRecord]]]:
    """The manifest to calibrate on (`--data`, else the run's) and its splits."""
    manifest_path = Path(data) if data else Path(trained.payload.get("manifest_path") or "")
    if not manifest_path.is_file():
        raise ExportError("no manifest to calibrate on: pass --data MANIFEST")
    manifest = load_manifest(manifest_path, trained.regions)
    splits = calibration_splits(manifest, trained.config)
    if not splits.get("calib"):
        raise ExportError(f"{manifest_path}: no labelled photos in the calib split")
    if not splits.get("val"):
        # A manifest made for calibration alone (calib and test): the item rule is fitted on
        # the training run's own val split, so that calib only certifies.
        run_manifest = Path(trained.payload.get("manifest_path") or "")
        if run_manifest.is_file():
            own = calibration_splits(load_manifest(run_manifest, trained.regions), trained.config)
            splits["val"] = own.get("val", [])
    if not splits.get("val"):
        raise ExportError(
            f"{manifest_path}: no val split to fit the item rule on, and the run's own manifest "
            "is not at hand"
        )
    return manifest, splits
