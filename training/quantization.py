"""int8 static quantisation with ONNX Runtime, and the gate it must pass: an int8 model that
loses more than half a point of item accuracy on the held-out split is refused unless forced."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from touchstone.data.manifest import PhotoRecord
from touchstone.evaluation.results import Evaluation
from touchstone.evaluation.scoring import prepare_photo
from touchstone.evaluation.thresholds import Targets
from touchstone.imaging import Preprocessing
from training.card_writing import FittedModel, fit_and_evaluate
from training.onnx_export import INPUT_NAME, ExportError, TrainedModel

MAX_INT8_ITEM_ACCURACY_DROP = 0.005  # 0.5 points
CALIBRATION_PHOTOS = 128
METHOD = "onnxruntime static, QDQ, per-channel int8 weights, uint8 activations"


class _CalibrationImages:
    """onnxruntime's CalibrationDataReader over a few train photos."""

    def __init__(self, records: list[PhotoRecord], preprocessing: Preprocessing) -> None:
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


def calibration_sample(records: list[PhotoRecord], count: int, seed: int) -> list[PhotoRecord]:
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(records), size=min(count, len(records)), replace=False)
    return [records[i] for i in sorted(chosen)]


def quantize_and_refit(
    fp32: FittedModel,
    int8_path: Path,
    trained: TrainedModel,
    splits: dict[str, list[PhotoRecord]],
    held_out_name: str,
    targets: Targets,
    force: bool,
    console: Console,
) -> tuple[FittedModel, dict[str, Any]]:
    """The int8 model with its own policy, and what quantisation changed (for the card)."""
    # Activation ranges from photos the thresholds are not fitted on, where there are.
    pool = splits.get("train") or splits.get("val") or splits["calib"]
    sample = calibration_sample(pool, CALIBRATION_PHOTOS, trained.config.seed)
    quantize_int8(fp32.onnx_path, int8_path, sample, trained.preprocessing)
    int8 = fit_and_evaluate(int8_path, trained, splits, held_out_name, targets, console)
    before, after = fp32.held_out, int8.held_out
    change = after.item.accuracy - before.item.accuracy
    quantization = {
        "method": METHOD,
        "calibration_photos": len(sample),
        "split": held_out_name,
        **_accuracies(before, after),
        "fp32_bytes": fp32.onnx_path.stat().st_size,
        "int8_bytes": int8_path.stat().st_size,
    }
    console.print(
        f"int8: item accuracy {after.item.accuracy:.3f} against fp32 "
        f"{before.item.accuracy:.3f} ({change * 100:+.1f} points)"
    )
    if change < -MAX_INT8_ITEM_ACCURACY_DROP and not force:
        raise ExportError(
            f"int8 loses {-change * 100:.1f} points of item accuracy on {held_out_name} "
            f"(allowed {MAX_INT8_ITEM_ACCURACY_DROP * 100:.1f}); pass --force to ship it"
        )
    return int8, quantization


def _accuracies(fp32: Evaluation, int8: Evaluation) -> dict[str, float | None]:
    return {
        "item_accuracy_fp32": fp32.item.accuracy,
        "item_accuracy_int8": int8.item.accuracy,
        "item_accuracy_change": int8.item.accuracy - fp32.item.accuracy,
        "photo_accuracy_fp32": fp32.photo.overall.accuracy,
        "photo_accuracy_int8": int8.photo.overall.accuracy,
    }
