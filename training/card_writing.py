"""The decision policy fitted by the ONNX model that will be served, and the model card that
carries it: the `val` split fits temperature and item rule, `calib` certifies the thresholds,
the held-out split (`test`) gives the card's metrics."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from touchstone.data.manifest import Manifest, PhotoRecord
from touchstone.evaluation.evaluate import evaluate
from touchstone.evaluation.policy import DecisionPolicy, card_thresholds, fit_policy
from touchstone.evaluation.results import Evaluation
from touchstone.evaluation.scoring import PhotoScores, score_records
from touchstone.evaluation.thresholds import Targets
from touchstone.model_card import (
    CARD_FORMAT,
    ONNX_FILE,
    Calibration,
    CardPreprocessing,
    ItemRule,
    ModelCard,
    OnnxInfo,
    PhotoCalibration,
    file_sha256,
)
from training.config import TrainConfig
from training.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME, TrainedModel, onnx_predict
from training.run_setup import split_records
from training.tracking import git_commit


@dataclass
class FittedModel:
    """One ONNX file with the policy fitted on its calib scores and its held-out metrics."""

    onnx_path: Path
    policy: DecisionPolicy
    held_out: Evaluation
    # Every photo it scored, by split: for analyses that would otherwise score them again.
    scores: dict[str, PhotoScores]


def calibration_splits(manifest: Manifest, config: TrainConfig) -> dict[str, list[PhotoRecord]]:
    """The manifest's own splits, or the ones its training run drew (same seed, same split).
    A manifest made for calibration alone (calib and test, no train) is fine."""
    labelled = [r for r in manifest.records if r.label is not None]
    if labelled and all(r.split for r in labelled):
        splits: dict[str, list[PhotoRecord]] = {}
        for record in labelled:
            splits.setdefault(record.split or "", []).append(record)
        return splits
    return split_records(manifest, config)


def fit_and_evaluate(
    onnx_path: Path,
    trained: TrainedModel,
    splits: dict[str, list[PhotoRecord]],
    held_out_name: str,
    targets: Targets,
    console: Console,
) -> FittedModel:
    predict = onnx_predict(onnx_path)

    def score(split: str) -> PhotoScores:
        return score_records(
            splits[split],
            predict,
            trained.preprocessing,
            trained.regions,
            console=console,
            description=f"scoring {split}",
        )

    scores = {split: score(split) for split in dict.fromkeys(("val", "calib", held_out_name))}
    policy = fit_policy(scores["val"], scores["calib"], targets)
    return FittedModel(onnx_path, policy, evaluate(scores[held_out_name], policy), scores)


def card_metrics(
    held_out: Evaluation, held_out_name: str, trained: TrainedModel, quantization: dict[str, Any]
) -> dict[str, Any]:
    decisions, photo = held_out.decisions, held_out.photo
    metrics = {
        "split": held_out_name,
        "photo_accuracy": photo.overall.accuracy,
        "photo_auc": photo.overall.auc,
        "item_accuracy": held_out.item.accuracy,
        "item_auc": held_out.item.auc,
        "item_ece": held_out.item.calibration.after.ece,
        "coverage": decisions.coverage,
        "selective_accuracy": decisions.selective_accuracy,
        "false_authentic": asdict(decisions.false_authentic),
        "false_counterfeit": asdict(decisions.false_counterfeit),
        "aurc": held_out.risk_coverage.aurc,
        "per_region_auc": {
            r: photo.by_region[r].auc if r in photo.by_region else None for r in trained.regions
        },
        "training_validation": trained.payload.get("metrics", {}),
    }
    if quantization:
        metrics["quantization"] = quantization
    return metrics


def build_card(
    trained: TrainedModel,
    manifest: Manifest,
    splits: dict[str, list[PhotoRecord]],
    fitted: FittedModel,
    held_out_name: str,
    quantization: dict[str, Any],
    out: Path,
) -> ModelCard:
    onnx_sha = file_sha256(out / ONNX_FILE)
    return ModelCard(
        format=CARD_FORMAT,
        name=trained.config.tracking.registered_model,
        version=onnx_sha[:12],
        architecture=trained.payload["arch"],
        regions=trained.regions,
        categories=_categories(trained, splits),
        preprocessing=_card_preprocessing(trained),
        onnx=OnnxInfo(
            sha256=onnx_sha,
            opset=OPSET,
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            quantization="int8" if quantization else "none",
        ),
        calibration=_card_calibration(fitted.policy),
        thresholds=card_thresholds(fitted.policy),
        metrics=card_metrics(fitted.held_out, held_out_name, trained, quantization),
        data=_card_data(trained, manifest, splits),
        git_commit=git_commit(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        training_run={
            "run_dir": str(Path(trained.payload.get("run_dir", "")) or ""),
            "epoch": trained.payload.get("epoch"),
            "mlflow_run_id": trained.payload.get("mlflow_run_id"),
        },
    )


def _card_preprocessing(trained: TrainedModel) -> CardPreprocessing:
    prep = trained.preprocessing
    return CardPreprocessing(
        input_size=prep.input_size,
        mean=prep.mean,
        std=prep.std,
        interpolation=prep.interpolation,
        crop_pct=prep.crop_pct,
    )


def _card_calibration(policy: DecisionPolicy) -> Calibration:
    aggregation = policy.aggregation
    return Calibration(
        photo=PhotoCalibration(temperature=policy.temperature),
        item=ItemRule(
            region_weights=dict(zip(aggregation.regions, aggregation.weights, strict=True)),
            bias=aggregation.bias,
        ),
    )


def _card_data(
    trained: TrainedModel, manifest: Manifest, splits: dict[str, list[PhotoRecord]]
) -> dict[str, Any]:
    return {
        "manifest": str(manifest.path),
        "manifest_sha256": manifest.content_hash(),
        "trained_on_manifest_sha256": trained.payload.get("manifest_sha256"),
        "photos": {split: len(records) for split, records in splits.items()},
        "items": {split: len({r.item_id for r in records}) for split, records in splits.items()},
    }


def _categories(trained: TrainedModel, splits: dict[str, list[PhotoRecord]]) -> tuple[str, ...]:
    """The categories the model was trained on: serving sends others to people."""
    trained_on = trained.payload.get("categories")
    if trained_on:
        return tuple(trained_on)
    records = splits.get("train") or [r for rs in splits.values() for r in rs]
    return tuple(sorted({r.category for r in records if r.category}))
