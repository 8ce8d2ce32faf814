"""Evaluation: photo and item metrics, calibration, the auto/human split and its error rates.

`fit_policy` turns the scores of the `calib` split into a decision policy (temperature, item
aggregation, thresholds); `evaluate` measures any scored split under a policy. Training runs,
`touchstone export` and `touchstone evaluate` all call these two, on scores from torch or from
ONNX Runtime alike.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from touchstone.decision import (
    AUTO_AUTHENTIC,
    AUTO_COUNTERFEIT,
    HUMAN,
    ItemAggregation,
    Thresholds,
    photo_probability,
    sigmoid,
)
from touchstone.evaluation.calibration import (
    calibration_measures,
    fit_item_aggregation,
    fit_temperature,
    reliability_bins,
)
from touchstone.evaluation.metrics import photo_metrics
from touchstone.evaluation.scoring import PhotoScores
from touchstone.evaluation.thresholds import Targets, choose_thresholds, clopper_pearson_interval
from touchstone.model_card import ModelCard


@dataclass
class DecisionPolicy:
    temperature: float
    aggregation: ItemAggregation
    thresholds: Thresholds
    targets: Targets = field(default_factory=Targets)
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class ItemScores:
    item_ids: list[str]
    labels: np.ndarray  # 1 authentic, 0 counterfeit
    categories: list[str]
    means: np.ndarray  # (items, regions) mean photo log-odds, 0 where absent
    present: np.ndarray  # (items, regions) bool
    super_fake: np.ndarray  # bool; False when the data does not say
    cue_strength: np.ndarray  # strongest counterfeit cue of the item; nan when unknown

    def log_odds(self, aggregation: ItemAggregation) -> np.ndarray:
        return aggregation.item_log_odds_from_features(self.means)


def item_scores(scores: PhotoScores) -> ItemScores:
    ids = sorted({r.item_id for r in scores.records})
    index = {item: i for i, item in enumerate(ids)}
    item_index = np.array([index[r.item_id] for r in scores.records], dtype=int)
    means, present = ItemAggregation.uncalibrated(scores.regions).region_features(
        item_index, scores.region_index, scores.log_odds, len(ids)
    )
    labels = np.zeros(len(ids))
    categories = ["unknown"] * len(ids)
    super_fake = np.zeros(len(ids), bool)
    strength = np.full(len(ids), np.nan)
    for record, i in zip(scores.records, item_index, strict=True):
        labels[i] = 1.0 if record.label == "authentic" else 0.0
        categories[i] = record.category or "unknown"
        super_fake[i] |= record.extra.get("super_fake") == "1"
        if record.extra.get("cue_strength"):
            strength[i] = np.fmax(strength[i], float(record.extra["cue_strength"]))
    return ItemScores(ids, labels, categories, means, present, super_fake, strength)


def fit_policy(calib: PhotoScores, targets: Targets | None = None) -> DecisionPolicy:
    targets = targets or Targets()
    labels = calib.labels
    temperature = fit_temperature(calib.log_odds, labels)
    items = item_scores(calib)
    aggregation = fit_item_aggregation(items.means, items.labels, calib.regions)
    p_item = sigmoid(items.log_odds(aggregation))
    thresholds, evidence = choose_thresholds(p_item, items.labels, targets)
    return DecisionPolicy(temperature, aggregation, thresholds, targets, evidence)


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def _rate(errors: int, n: int) -> dict[str, Any]:
    low, high = clopper_pearson_interval(errors, n)
    return {
        "errors": errors,
        "decided": n,
        "rate": errors / n if n else None,
        "ci95": [low, high],
    }


def risk_coverage(p_item: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Items taken most-confident first; risk = error rate of the 0.5 decision on those taken.
    AURC is the mean risk over all coverages (lower is better)."""
    if len(p_item) == 0:
        return {"coverage": [], "risk": [], "aurc": float("nan")}
    confidence = np.abs(p_item - 0.5)
    order = np.argsort(-confidence, kind="stable")
    wrong = ((p_item[order] >= 0.5) != (labels[order] > 0.5)).astype(float)
    taken = np.arange(1, len(order) + 1)
    risk = np.cumsum(wrong) / taken
    return {
        "coverage": (taken / len(order)).tolist(),
        "risk": risk.tolist(),
        "aurc": float(risk.mean()),
    }


def evaluate(scores: PhotoScores, policy: DecisionPolicy) -> dict[str, Any]:
    """Everything a report shows about one scored split, as plain JSON-able values."""
    labels = scores.labels
    photo = photo_metrics(scores.log_odds, labels, scores.region_index, scores.regions)
    p_photo_raw = sigmoid(scores.log_odds)
    p_photo = photo_probability(scores.log_odds, policy.temperature)
    categories = sorted({r.category or "unknown" for r in scores.records})
    photo_by_category = {}
    for category in categories:
        mask = np.array([(r.category or "unknown") == category for r in scores.records])
        photo_by_category[category] = {
            "photos": int(mask.sum()),
            "accuracy": float(np.mean((scores.log_odds[mask] > 0) == (labels[mask] > 0.5))),
            "auc": _auc(labels[mask], scores.log_odds[mask]),
        }

    items = item_scores(scores)
    raw = sigmoid(items.log_odds(ItemAggregation.uncalibrated(scores.regions)))
    p_item = sigmoid(items.log_odds(policy.aggregation))
    y = items.labels
    item_by_category = {}
    for category in sorted(set(items.categories)):
        mask = np.array([c == category for c in items.categories])
        item_by_category[category] = {
            "items": int(mask.sum()),
            "accuracy": float(np.mean((p_item[mask] >= 0.5) == (y[mask] > 0.5))),
            "auc": _auc(y[mask], p_item[mask]),
        }
    routes = policy.thresholds.routes(p_item)
    auto_authentic, auto_counterfeit = routes == AUTO_AUTHENTIC, routes == AUTO_COUNTERFEIT
    decided = auto_authentic | auto_counterfeit
    correct = (auto_authentic & (y > 0.5)) | (auto_counterfeit & (y < 0.5))
    n_decided = int(decided.sum())
    operating = {
        "authentic_at": policy.thresholds.authentic_at,
        "counterfeit_at": policy.thresholds.counterfeit_at,
        "items": len(y),
        "coverage": n_decided / len(y) if len(y) else 0.0,
        "auto_authentic": int(auto_authentic.sum()),
        "auto_counterfeit": int(auto_counterfeit.sum()),
        "human": int((routes == HUMAN).sum()),
        "selective_accuracy": float(correct.sum() / n_decided) if n_decided else None,
        "false_authentic": _rate(
            int((auto_authentic & (y < 0.5)).sum()), int(auto_authentic.sum())
        ),
        "false_counterfeit": _rate(
            int((auto_counterfeit & (y > 0.5)).sum()), int(auto_counterfeit.sum())
        ),
        "targets": {
            "false_authentic": policy.targets.false_authentic,
            "false_counterfeit": policy.targets.false_counterfeit,
        },
    }
    confusion = {
        truth: {
            route: int(((y > 0.5) == (truth == "authentic"))[routes == route].sum())
            for route in (AUTO_AUTHENTIC, HUMAN, AUTO_COUNTERFEIT)
        }
        for truth in ("authentic", "counterfeit")
    }
    result: dict[str, Any] = {
        "photo": {
            **photo,
            "by_category": photo_by_category,
            "calibration_before": calibration_measures(p_photo_raw, labels),
            "calibration_after": calibration_measures(p_photo, labels),
            "reliability_before": reliability_bins(p_photo_raw, labels),
            "reliability_after": reliability_bins(p_photo, labels),
            "skipped": len(scores.skipped),
        },
        "item": {
            "count": len(y),
            "accuracy": float(np.mean((p_item >= 0.5) == (y > 0.5))) if len(y) else None,
            "auc": _auc(y, p_item),
            "by_category": item_by_category,
            "calibration_before": calibration_measures(raw, y),
            "calibration_after": calibration_measures(p_item, y),
            "reliability_before": reliability_bins(raw, y),
            "reliability_after": reliability_bins(p_item, y),
            "confusion_at_0.5": {
                "authentic": {
                    "authentic": int(((p_item >= 0.5) & (y > 0.5)).sum()),
                    "counterfeit": int(((p_item < 0.5) & (y > 0.5)).sum()),
                },
                "counterfeit": {
                    "authentic": int(((p_item >= 0.5) & (y < 0.5)).sum()),
                    "counterfeit": int(((p_item < 0.5) & (y < 0.5)).sum()),
                },
            },
        },
        "decisions": {**operating, "confusion": confusion},
        "risk_coverage": risk_coverage(p_item, y),
    }
    result["counterfeits_by_cue_strength"] = _by_cue_strength(items, routes)
    result["passed_counterfeits"] = [
        {
            "item_id": items.item_ids[i],
            "p_authentic": float(p_item[i]),
            "super_fake": bool(items.super_fake[i]),
            "cue_strength": None
            if np.isnan(items.cue_strength[i])
            else float(items.cue_strength[i]),
        }
        for i in np.flatnonzero(auto_authentic & (y < 0.5))
    ]
    result["item_p_authentic"] = {"p": p_item.tolist(), "label": y.tolist()}
    return result


def _by_cue_strength(items: ItemScores, routes: np.ndarray) -> list[dict[str, Any]]:
    """Synthetic data only: where counterfeits went, by the strength of their strongest cue."""
    fakes = np.flatnonzero((items.labels < 0.5) & ~np.isnan(items.cue_strength))
    if len(fakes) == 0:
        return []
    edges = [0.0, 0.2, 0.4, 0.6, 0.8, 1.01]
    rows = []
    for low, high in itertools.pairwise(edges):
        chosen = [i for i in fakes if low <= items.cue_strength[i] < high]
        counts = Counter(routes[i] for i in chosen)
        rows.append(
            {
                "cue_strength": f"{low:.1f}-{min(high, 1.0):.1f}",
                "counterfeits": len(chosen),
                "super_fakes": int(sum(items.super_fake[i] for i in chosen)),
                "passed_as_authentic": counts.get(AUTO_AUTHENTIC, 0),
                "to_human": counts.get(HUMAN, 0),
                "caught_alone": counts.get(AUTO_COUNTERFEIT, 0),
            }
        )
    return rows


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
