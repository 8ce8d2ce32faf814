"""The decision policy: photo temperature and item rule fitted on `val`, thresholds certified on
`calib`, for the items that show the regions their category's certified items show.

Training runs and `touchstone export` fit it with `fit_policy`; `touchstone evaluate` reads the
one a model card holds with `policy_from_card`, never refitting it on the data it measures;
`touchstone recertify` certifies the card's rule again on a larger sample (`certify_items`).
Fitting the rule and certifying the thresholds on different items keeps the certification
honest: thresholds certified on the items the weights were fitted to would look better than
they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from touchstone.decision import ItemAggregation, Thresholds, missing_regions, required_regions
from touchstone.evaluation.calibration import fit_item_aggregation, fit_temperature
from touchstone.evaluation.scoring import ItemScores, PhotoScores, item_scores
from touchstone.evaluation.thresholds import Targets, certify
from touchstone.model_card import (
    CardThresholds,
    CertificationSample,
    CounterfeitShare,
    ModelCard,
    ThresholdTargets,
)


@dataclass
class CertifiedSample:
    """Item log-odds by class that the thresholds were certified on, and their sources."""

    authentic: np.ndarray
    counterfeit: np.ndarray
    sources: dict[str, dict[str, int]]

    @classmethod
    def of(cls, log_odds: np.ndarray, labels: np.ndarray, source: str) -> CertifiedSample:
        authentic, counterfeit = log_odds[labels > 0.5], log_odds[labels < 0.5]
        counts = {"authentic": len(authentic), "counterfeit": len(counterfeit)}
        return cls(authentic, counterfeit, {source: counts})

    def pooled(self, other: CertifiedSample) -> CertifiedSample:
        sources = {k: dict(v) for k, v in self.sources.items()}
        for name, counts in other.sources.items():
            mine = sources.setdefault(name, {"authentic": 0, "counterfeit": 0})
            for label, n in counts.items():
                mine[label] = mine.get(label, 0) + n
        return CertifiedSample(
            np.concatenate([self.authentic, other.authentic]),
            np.concatenate([self.counterfeit, other.counterfeit]),
            sources,
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        log_odds = np.concatenate([self.authentic, self.counterfeit])
        labels = np.r_[np.ones(len(self.authentic)), np.zeros(len(self.counterfeit))]
        return log_odds, labels


@dataclass
class DecisionPolicy:
    temperature: float
    aggregation: ItemAggregation
    thresholds: Thresholds
    targets: Targets = field(default_factory=Targets)
    evidence: dict[str, Any] = field(default_factory=dict)
    required_regions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sample: CertifiedSample | None = None

    def complete(self, items: ItemScores) -> np.ndarray:
        """Which items show every region their category must show to be decided alone."""
        return complete_items(items, self.required_regions)


def complete_items(items: ItemScores, required: dict[str, tuple[str, ...]]) -> np.ndarray:
    def shown(row: np.ndarray) -> list[str]:
        return [region for region, present in zip(items.regions, row, strict=True) if present]

    return np.array(
        [
            not missing_regions(category, shown(row), required)
            for category, row in zip(items.categories, items.present, strict=True)
        ],
        dtype=bool,
    )


def certify_items(sample: CertifiedSample, targets: Targets) -> tuple[Thresholds, dict[str, Any]]:
    log_odds, labels = sample.arrays()
    thresholds, evidence = certify(log_odds, labels, targets)
    evidence["sources"] = sample.sources
    return thresholds, evidence


def fit_policy(
    val: PhotoScores, calib: PhotoScores, targets: Targets | None = None
) -> DecisionPolicy:
    targets = targets or Targets()
    temperature = fit_temperature(val.log_odds, val.labels)
    fitting = item_scores(val)
    aggregation = fit_item_aggregation(fitting.means, fitting.labels, val.regions)
    items = item_scores(calib)
    required = required_regions(items.categories, items.present, calib.regions)
    complete = complete_items(items, required)
    log_odds = items.log_odds(aggregation)[complete]
    sample = CertifiedSample.of(log_odds, items.labels[complete], "calib")
    thresholds, evidence = certify_items(sample, targets)
    evidence["left_out_missing_a_region"] = int((~complete).sum())
    return DecisionPolicy(temperature, aggregation, thresholds, targets, evidence, required, sample)


def policy_from_card(card: ModelCard) -> DecisionPolicy:
    t = card.thresholds
    sample = CertifiedSample(
        np.asarray(t.sample.authentic, dtype=np.float64),
        np.asarray(t.sample.counterfeit, dtype=np.float64),
        {k: dict(v) for k, v in t.sample.sources.items()},
    )
    return DecisionPolicy(
        temperature=card.calibration.photo.temperature,
        aggregation=card.aggregation(),
        thresholds=t.to_thresholds(),
        targets=t.targets.to_targets(),
        evidence=t.evidence,
        required_regions=dict(t.required_regions),
        sample=sample,
    )


def card_thresholds(policy: DecisionPolicy, certification: int = 1) -> CardThresholds:
    """What a model card says of the policy's thresholds: targets, range, evidence, sample."""
    targets, sample = policy.targets, policy.sample
    return CardThresholds(
        authentic_at=policy.thresholds.authentic_at,
        counterfeit_at=policy.thresholds.counterfeit_at,
        targets=ThresholdTargets(
            false_authentic=targets.false_authentic,
            false_counterfeit=targets.false_counterfeit,
            confidence=targets.confidence,
            counterfeit_share=CounterfeitShare(
                low=targets.counterfeit_share.low, high=targets.counterfeit_share.high
            ),
        ),
        required_regions=policy.required_regions,
        evidence=policy.evidence,
        sample=CertificationSample(
            authentic=tuple(float(x) for x in sample.authentic),
            counterfeit=tuple(float(x) for x in sample.counterfeit),
            sources=sample.sources,
        )
        if sample is not None
        else CertificationSample(),
        certification=certification,
    )
