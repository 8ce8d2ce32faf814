"""The decision policy: photo temperature, item rule and thresholds, fitted on the `calib` split.

Training runs and `touchstone export` fit it with `fit_policy`; `touchstone evaluate` reads the
one a model card holds with `policy_from_card`, never refitting it on the data it measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from touchstone.decision import ItemAggregation, Thresholds, sigmoid
from touchstone.evaluation.calibration import fit_item_aggregation, fit_temperature
from touchstone.evaluation.scoring import PhotoScores, item_scores
from touchstone.evaluation.thresholds import Targets, choose_thresholds
from touchstone.model_card import ModelCard


@dataclass
class DecisionPolicy:
    temperature: float
    aggregation: ItemAggregation
    thresholds: Thresholds
    targets: Targets = field(default_factory=Targets)
    evidence: dict[str, Any] = field(default_factory=dict)


def fit_policy(calib: PhotoScores, targets: Targets | None = None) -> DecisionPolicy:
    targets = targets or Targets()
    labels = calib.labels
    temperature = fit_temperature(calib.log_odds, labels)
    items = item_scores(calib)
    aggregation = fit_item_aggregation(items.means, items.labels, calib.regions)
    p_item = sigmoid(items.log_odds(aggregation))
    thresholds, evidence = choose_thresholds(p_item, items.labels, targets)
    return DecisionPolicy(temperature, aggregation, thresholds, targets, evidence)


def policy_from_card(card: ModelCard) -> DecisionPolicy:
    t = card.thresholds
    return DecisionPolicy(
        temperature=card.calibration.photo.temperature,
        aggregation=card.aggregation(),
        thresholds=t.to_thresholds(),
        targets=Targets(
            t.targets.false_authentic, t.targets.false_counterfeit, t.targets.confidence
        ),
        evidence=t.evidence,
    )
