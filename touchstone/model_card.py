"""The model card, `model.json`: everything serving needs to run `model.onnx`, and nothing else.

`touchstone export` writes it; serving and `touchstone evaluate` read it with `load_model_dir`,
which refuses a card that does not parse, does not match the schema, or does not belong to the
`model.onnx` beside it (content hash). The ONNX graph's own input and output shapes are checked
against the card when a session opens (`touchstone.inference`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from touchstone.decision import ItemAggregation, Thresholds
from touchstone.evaluation.targets import ShareRange, Targets
from touchstone.imaging import Preprocessing
from touchstone.vocabulary import check_region_vocabulary

CARD_FILE = "model.json"
ONNX_FILE = "model.onnx"
CARD_FORMAT = "touchstone-model-card/2"


class ModelCardError(Exception):
    """A model directory that cannot be served; `code` is stable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CardPreprocessing(_Strict):
    input_size: int = Field(gt=0, le=4096)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bilinear", "bicubic"]
    crop_pct: float = Field(gt=0, le=1)

    @field_validator("std")
    @classmethod
    def _positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError("std must be positive")
        return value

    def to_preprocessing(self) -> Preprocessing:
        return Preprocessing(
            self.input_size, self.mean, self.std, self.interpolation, self.crop_pct
        )


class OnnxInfo(_Strict):
    file: str = ONNX_FILE
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    opset: int = Field(ge=17)
    input_name: str
    output_name: str
    # Output: (batch, regions) log-odds of authentic; the photo's region picks its column.
    quantization: Literal["none", "int8"] = "none"


class PhotoCalibration(_Strict):
    method: Literal["temperature"] = "temperature"
    temperature: float = Field(gt=0)


class ItemRule(_Strict):
    rule: Literal["weighted_region_mean_log_odds"] = "weighted_region_mean_log_odds"
    region_weights: dict[str, float]
    bias: float
    description: str = (
        "item log-odds = bias + sum over regions of weight * mean photo log-odds of that "
        "region; p_authentic = sigmoid(item log-odds); absent regions add nothing"
    )

    @field_validator("region_weights")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in value.values()):
            raise ValueError("region weights must be >= 0")
        return value


class Calibration(_Strict):
    photo: PhotoCalibration
    item: ItemRule
    # Fitted on `val`, so that the thresholds are certified on items (calib) the rule never saw.
    fitted_on: str = "val"


class CounterfeitShare(_Strict):
    """The share of counterfeits in traffic that the decision rates are certified for."""

    low: float = Field(0.10, gt=0, lt=1)
    high: float = Field(0.30, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> CounterfeitShare:
        if self.low > self.high:
            raise ValueError("counterfeit_share.low must not exceed high")
        return self

    def to_range(self) -> ShareRange:
        return ShareRange(self.low, self.high)


class ThresholdTargets(_Strict):
    false_authentic: float = Field(0.005, gt=0, lt=1)
    false_counterfeit: float = Field(0.02, gt=0, lt=1)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    counterfeit_share: CounterfeitShare = Field(default_factory=CounterfeitShare)

    def to_targets(self) -> Targets:
        return Targets(
            self.false_authentic,
            self.false_counterfeit,
            self.confidence,
            self.counterfeit_share.to_range(),
        )


class CertificationSample(_Strict):
    """The items the thresholds were certified on, as item log-odds by class, and where they
    came from ({source: {authentic: n, counterfeit: n}}): `touchstone recertify` pools them with
    finalised audit verdicts of the same model."""

    authentic: tuple[float, ...] = ()
    counterfeit: tuple[float, ...] = ()
    sources: dict[str, dict[str, int]] = Field(default_factory=dict)


class CardThresholds(_Strict):
    # Item log-odds of authentic (not probabilities); None: that side is never decided alone.
    authentic_at: float | None = Field(allow_inf_nan=False)
    counterfeit_at: float | None = Field(allow_inf_nan=False)
    targets: ThresholdTargets
    # Per category, the regions an item must show to be decided alone: those the certified
    # items showed. An item without one goes to a person, whatever its score.
    required_regions: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # How the certification sample supported them: per side the counts, bounds and decision
    # rate bound, or why not and the evidence plan.
    evidence: dict[str, Any] = Field(default_factory=dict)
    sample: CertificationSample = Field(default_factory=CertificationSample)
    # 1 for the export; each `touchstone recertify` of the same ONNX file adds one.
    certification: int = Field(1, ge=1)

    def to_thresholds(self) -> Thresholds:
        return Thresholds(self.authentic_at, self.counterfeit_at)


class ModelCard(_Strict):
    format: Literal["touchstone-model-card/2"] = CARD_FORMAT
    name: str
    version: str | None = None
    architecture: str
    regions: tuple[str, ...]
    categories: tuple[str, ...] = ()  # seen in training; others go to people (policy)
    preprocessing: CardPreprocessing
    onnx: OnnxInfo
    calibration: Calibration
    thresholds: CardThresholds
    metrics: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)  # manifest hash, counts
    git_commit: str
    created_at: str
    training_run: dict[str, Any] = Field(default_factory=dict)

    @field_validator("regions")
    @classmethod
    def _vocabulary(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_region_vocabulary(value)

    @model_validator(mode="after")
    def _weights_match_regions(self) -> ModelCard:
        weights = set(self.calibration.item.region_weights)
        if weights != set(self.regions):
            raise ValueError(
                f"calibration.item.region_weights names {sorted(weights)} "
                f"but the model's regions are {list(self.regions)}"
            )
        self.thresholds.to_thresholds()  # raises on crossed thresholds
        for category, regions in self.thresholds.required_regions.items():
            unknown = set(regions) - set(self.regions)
            if unknown:
                raise ValueError(
                    f"thresholds.required_regions[{category}] names {sorted(unknown)}, "
                    f"not among the model's regions {list(self.regions)}"
                )
        return self

    def aggregation(self) -> ItemAggregation:
        item = self.calibration.item
        return ItemAggregation(
            self.regions, tuple(item.region_weights[r] for r in self.regions), item.bias
        )

    def write(self, folder: Path) -> Path:
        path = Path(folder) / CARD_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path


@dataclass(frozen=True)
class ModelDir:
    path: Path
    card: ModelCard

    @property
    def onnx_path(self) -> Path:
        return self.path / self.card.onnx.file


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model_dir(folder: str | Path, verify_hash: bool = True) -> ModelDir:
    """Read and check a model directory; raise ModelCardError with a stable code:
    `not_a_directory`, `card_missing`, `card_unreadable`, `card_outdated`, `card_invalid`,
    `onnx_missing`, `onnx_hash_mismatch`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelCardError("not_a_directory", f"{folder}: not a model directory")
    card_path = folder / CARD_FILE
    if not card_path.exists():
        raise ModelCardError("card_missing", f"{folder}: no {CARD_FILE} (run touchstone export)")
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCardError("card_unreadable", f"{card_path}: not valid JSON: {exc}") from exc
    if isinstance(data, dict) and data.get("format") == "touchstone-model-card/1":
        raise ModelCardError(
            "card_outdated",
            f"{card_path}: format touchstone-model-card/1 holds probability thresholds "
            "certified at calib's own mix of classes; export the model again",
        )
    try:
        card = ModelCard.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'card'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ModelCardError("card_invalid", f"{card_path}: {problems}") from exc
    model_dir = ModelDir(folder, card)
    if not model_dir.onnx_path.exists():
        raise ModelCardError("onnx_missing", f"{folder}: the card names {card.onnx.file}, absent")
    if verify_hash:
        actual = file_sha256(model_dir.onnx_path)
        if actual != card.onnx.sha256:
            raise ModelCardError(
                "onnx_hash_mismatch",
                f"{model_dir.onnx_path}: sha256 {actual[:12]}... differs from the card's "
                f"{card.onnx.sha256[:12]}...: this card does not describe this model",
            )
    return model_dir
