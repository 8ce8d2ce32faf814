"""What evaluating one scored split finds, typed; `Evaluation.to_json` is `metrics.json`.

`evaluate` builds these, the report, the training run, export's card and the command line read
them. The JSON keeps the layout reports have always had: photo measures flat, per region under
`<region>/<measure>`, and calibration as `calibration_before` ... `reliability_after`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from touchstone.evaluation.calibration import CalibrationMeasures, ReliabilityBin


@dataclass(frozen=True)
class PhotoMeasures:
    """Log-loss, accuracy at log-odds 0 and ROC-AUC of some photos; only a count when none."""

    count: float
    loss: float | None = None
    accuracy: float | None = None
    auc: float | None = None

    @classmethod
    def from_metrics(cls, metrics: dict[str, float], prefix: str = "") -> PhotoMeasures:
        """From `photo_metrics`' flat keys (`loss`, or `<region>/loss` with its prefix)."""
        return cls(
            count=metrics[f"{prefix}count"],
            loss=metrics.get(f"{prefix}loss"),
            accuracy=metrics.get(f"{prefix}accuracy"),
            auc=metrics.get(f"{prefix}auc"),
        )

    def to_json(self, prefix: str = "") -> dict[str, Any]:
        if not self.count:
            return {f"{prefix}count": self.count}
        return {
            f"{prefix}loss": self.loss,
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}auc": self.auc,
            f"{prefix}count": self.count,
        }


@dataclass(frozen=True)
class CalibrationCheck:
    """Probabilities against outcomes, before and after the fitted calibration."""

    before: CalibrationMeasures
    after: CalibrationMeasures
    reliability_before: list[ReliabilityBin]
    reliability_after: list[ReliabilityBin]

    def to_json(self) -> dict[str, Any]:
        return {
            "calibration_before": asdict(self.before),
            "calibration_after": asdict(self.after),
            "reliability_before": [asdict(b) for b in self.reliability_before],
            "reliability_after": [asdict(b) for b in self.reliability_after],
        }


@dataclass(frozen=True)
class CategoryPhotos:
    photos: int
    accuracy: float
    auc: float


@dataclass(frozen=True)
class CategoryItems:
    items: int
    accuracy: float
    auc: float


@dataclass(frozen=True)
class PhotoResults:
    overall: PhotoMeasures
    by_region: dict[str, PhotoMeasures]  # regions with photos, in vocabulary order
    by_category: dict[str, CategoryPhotos]
    calibration: CalibrationCheck  # photo temperature
    skipped: int  # photos that could not be decoded

    def to_json(self) -> dict[str, Any]:
        out = self.overall.to_json()
        for region, measures in self.by_region.items():
            out.update(measures.to_json(f"{region}/"))
        return {
            **out,
            "by_category": {name: asdict(row) for name, row in self.by_category.items()},
            **self.calibration.to_json(),
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class ItemResults:
    count: int
    accuracy: float | None  # at p = 0.5; None without items
    auc: float
    by_category: dict[str, CategoryItems]
    calibration: CalibrationCheck  # the item rule against every weight 1, no bias
    confusion_at_half: dict[str, dict[str, int]]  # truth -> called at p = 0.5 -> items

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "accuracy": self.accuracy,
            "auc": self.auc,
            "by_category": {name: asdict(row) for name, row in self.by_category.items()},
            **self.calibration.to_json(),
            "confusion_at_0.5": self.confusion_at_half,
        }


@dataclass(frozen=True)
class ErrorRate:
    """Errors among the items decided on one side, with the two-sided 95% Clopper-Pearson
    interval; `rate` is None when nothing was decided."""

    errors: int
    decided: int
    rate: float | None
    ci95: tuple[float, float]


@dataclass(frozen=True)
class RateTargets:
    false_authentic: float
    false_counterfeit: float


@dataclass(frozen=True)
class MixedRates:
    """The decision rates this split's per-class shares give at the two ends of the declared
    counterfeit share (the split's own mix is only one point in that range)."""

    counterfeit_share: tuple[float, float]
    counterfeits_passed: float | None  # share of counterfeits decided authentic
    authentic_called: float | None  # share of authentic items decided counterfeit
    false_authentic_at_high: float | None
    false_counterfeit_at_low: float | None


@dataclass(frozen=True)
class Decisions:
    """The auto/human split at the policy's thresholds (item log-odds)."""

    authentic_at: float | None
    counterfeit_at: float | None
    items: int
    coverage: float
    auto_authentic: int
    auto_counterfeit: int
    human: int
    missing_region: int  # sent to people for lacking a region their category requires
    selective_accuracy: float | None
    false_authentic: ErrorRate
    false_counterfeit: ErrorRate
    targets: RateTargets
    mixed: MixedRates
    confusion: dict[str, dict[str, int]]  # truth -> route -> items


@dataclass(frozen=True)
class RiskCoverage:
    coverage: list[float]
    risk: list[float]
    aurc: float


@dataclass(frozen=True)
class CueStrengthRow:
    """Synthetic data: where the counterfeits of one band of cue strength went."""

    cue_strength: str
    counterfeits: int
    super_fakes: int
    passed_as_authentic: int
    to_human: int
    caught_alone: int


@dataclass(frozen=True)
class PassedCounterfeit:
    item_id: str
    p_authentic: float
    super_fake: bool
    cue_strength: float | None


@dataclass(frozen=True)
class ItemProbabilities:
    """Every item's calibrated p(authentic), log-odds and label (1 authentic), for the
    decisions plot."""

    p: np.ndarray
    labels: np.ndarray
    log_odds: np.ndarray


@dataclass(frozen=True)
class EvaluatedModel:
    name: str
    version: str


@dataclass(frozen=True)
class EvaluatedData:
    manifest: str
    manifest_sha256: str
    split: str
    unknown_region_photos: int


@dataclass(frozen=True)
class Evaluation:
    """Everything a report shows about one scored split."""

    photo: PhotoResults
    item: ItemResults
    decisions: Decisions
    risk_coverage: RiskCoverage
    counterfeits_by_cue_strength: list[CueStrengthRow]
    passed_counterfeits: list[PassedCounterfeit]
    item_p_authentic: ItemProbabilities  # plotted, not written to metrics.json
    # Set by `touchstone evaluate`, which measures a model from elsewhere on any manifest.
    model: EvaluatedModel | None = None
    data: EvaluatedData | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "photo": self.photo.to_json(),
            "item": self.item.to_json(),
            "decisions": asdict(self.decisions),
            "risk_coverage": asdict(self.risk_coverage),
            "counterfeits_by_cue_strength": [asdict(r) for r in self.counterfeits_by_cue_strength],
            "passed_counterfeits": [asdict(r) for r in self.passed_counterfeits],
        }
        if self.model is not None:
            out["model"] = asdict(self.model)
        if self.data is not None:
            out["data"] = asdict(self.data)
        return out
