"""Evaluation: photo and item metrics, calibration, the auto/human split and its error rates.

`evaluate` measures any scored split under a decision policy (see `policy.fit_policy`).
Training runs, `touchstone export` and `touchstone evaluate` all call it, on scores from torch
or from ONNX Runtime alike.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
from sklearn.metrics import roc_auc_score

from touchstone.decision import (
    AUTO_AUTHENTIC,
    AUTO_COUNTERFEIT,
    HUMAN,
    ItemAggregation,
    photo_probability,
    sigmoid,
)
from touchstone.evaluation.bounds import clopper_pearson_interval, decision_error_rate
from touchstone.evaluation.calibration import calibration_measures, reliability_bins
from touchstone.evaluation.metrics import photo_metrics
from touchstone.evaluation.policy import DecisionPolicy
from touchstone.evaluation.results import (
    CalibrationCheck,
    CategoryItems,
    CategoryPhotos,
    CueStrengthRow,
    Decisions,
    ErrorRate,
    Evaluation,
    ItemProbabilities,
    ItemResults,
    MixedRates,
    PassedCounterfeit,
    PhotoMeasures,
    PhotoResults,
    RateTargets,
    RiskCoverage,
)
from touchstone.evaluation.scoring import ItemScores, PhotoScores, item_scores

CUE_STRENGTH_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.01)


def evaluate(scores: PhotoScores, policy: DecisionPolicy) -> Evaluation:
    """Everything a report shows about one scored split."""
    items = item_scores(scores)
    log_odds = items.log_odds(policy.aggregation)
    p_item = sigmoid(log_odds)
    routes = policy.thresholds.routes(log_odds)
    # An item without a region its category was certified with is never decided alone.
    incomplete = ~policy.complete(items)
    routes[incomplete] = HUMAN
    return Evaluation(
        photo=photo_results(scores, policy),
        item=item_results(items, p_item, scores.regions),
        decisions=decisions(routes, items.labels, policy, int(incomplete.sum())),
        risk_coverage=risk_coverage(p_item, items.labels),
        counterfeits_by_cue_strength=by_cue_strength(items, routes),
        passed_counterfeits=passed_counterfeits(items, p_item, routes),
        item_p_authentic=ItemProbabilities(p_item, items.labels, log_odds),
    )


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def calibration_check(
    before: np.ndarray, after: np.ndarray, labels: np.ndarray
) -> CalibrationCheck:
    return CalibrationCheck(
        before=calibration_measures(before, labels),
        after=calibration_measures(after, labels),
        reliability_before=reliability_bins(before, labels),
        reliability_after=reliability_bins(after, labels),
    )


def photo_results(scores: PhotoScores, policy: DecisionPolicy) -> PhotoResults:
    labels = scores.labels
    metrics = photo_metrics(scores.log_odds, labels, scores.region_index, scores.regions)
    return PhotoResults(
        overall=PhotoMeasures.from_metrics(metrics),
        by_region={
            region: PhotoMeasures.from_metrics(metrics, f"{region}/")
            for region in scores.regions
            if f"{region}/count" in metrics
        },
        by_category=photos_by_category(scores),
        calibration=calibration_check(
            sigmoid(scores.log_odds), photo_probability(scores.log_odds, policy.temperature), labels
        ),
        skipped=len(scores.skipped),
    )


def photos_by_category(scores: PhotoScores) -> dict[str, CategoryPhotos]:
    labels, log_odds = scores.labels, scores.log_odds
    rows = {}
    for category in sorted({r.category or "unknown" for r in scores.records}):
        mask = np.array([(r.category or "unknown") == category for r in scores.records])
        rows[category] = CategoryPhotos(
            photos=int(mask.sum()),
            accuracy=float(np.mean((log_odds[mask] > 0) == (labels[mask] > 0.5))),
            auc=_auc(labels[mask], log_odds[mask]),
        )
    return rows


def item_results(items: ItemScores, p_item: np.ndarray, regions: tuple[str, ...]) -> ItemResults:
    y = items.labels
    uncalibrated = sigmoid(items.log_odds(ItemAggregation.uncalibrated(regions)))
    return ItemResults(
        count=len(y),
        accuracy=float(np.mean((p_item >= 0.5) == (y > 0.5))) if len(y) else None,
        auc=_auc(y, p_item),
        by_category=items_by_category(items, p_item),
        calibration=calibration_check(uncalibrated, p_item, y),
        confusion_at_half=confusion_at_half(p_item, y),
    )


def items_by_category(items: ItemScores, p_item: np.ndarray) -> dict[str, CategoryItems]:
    y = items.labels
    rows = {}
    for category in sorted(set(items.categories)):
        mask = np.array([c == category for c in items.categories])
        rows[category] = CategoryItems(
            items=int(mask.sum()),
            accuracy=float(np.mean((p_item[mask] >= 0.5) == (y[mask] > 0.5))),
            auc=_auc(y[mask], p_item[mask]),
        )
    return rows


def confusion_at_half(p_item: np.ndarray, y: np.ndarray) -> dict[str, dict[str, int]]:
    """Items by truth, then by what p = 0.5 calls them."""
    return {
        truth: {
            "authentic": int(((p_item >= 0.5) & is_truth).sum()),
            "counterfeit": int(((p_item < 0.5) & is_truth).sum()),
        }
        for truth, is_truth in (("authentic", y > 0.5), ("counterfeit", y < 0.5))
    }


def error_rate(errors: int, decided: int) -> ErrorRate:
    low, high = clopper_pearson_interval(errors, decided)
    return ErrorRate(errors, decided, errors / decided if decided else None, (low, high))


def decisions(
    routes: np.ndarray, y: np.ndarray, policy: DecisionPolicy, missing_region: int = 0
) -> Decisions:
    auto_authentic, auto_counterfeit = routes == AUTO_AUTHENTIC, routes == AUTO_COUNTERFEIT
    correct = (auto_authentic & (y > 0.5)) | (auto_counterfeit & (y < 0.5))
    decided = int((auto_authentic | auto_counterfeit).sum())
    return Decisions(
        authentic_at=policy.thresholds.authentic_at,
        counterfeit_at=policy.thresholds.counterfeit_at,
        items=len(y),
        coverage=decided / len(y) if len(y) else 0.0,
        auto_authentic=int(auto_authentic.sum()),
        auto_counterfeit=int(auto_counterfeit.sum()),
        human=int((routes == HUMAN).sum()),
        missing_region=missing_region,
        selective_accuracy=float(correct.sum() / decided) if decided else None,
        false_authentic=error_rate(
            int((auto_authentic & (y < 0.5)).sum()), int(auto_authentic.sum())
        ),
        false_counterfeit=error_rate(
            int((auto_counterfeit & (y > 0.5)).sum()), int(auto_counterfeit.sum())
        ),
        targets=RateTargets(policy.targets.false_authentic, policy.targets.false_counterfeit),
        mixed=mixed_rates(auto_authentic, auto_counterfeit, y, policy),
        confusion={
            truth: {
                route: int(((y > 0.5) == (truth == "authentic"))[routes == route].sum())
                for route in (AUTO_AUTHENTIC, HUMAN, AUTO_COUNTERFEIT)
            }
            for truth in ("authentic", "counterfeit")
        },
    )


def mixed_rates(
    auto_authentic: np.ndarray, auto_counterfeit: np.ndarray, y: np.ndarray, policy: DecisionPolicy
) -> MixedRates:
    share = policy.targets.counterfeit_share
    authentic, counterfeit = y > 0.5, y < 0.5
    if not authentic.any() or not counterfeit.any():
        return MixedRates((share.low, share.high), None, None, None, None)
    passed = float(auto_authentic[counterfeit].mean())  # counterfeits passed as authentic
    called = float(auto_counterfeit[authentic].mean())  # authentic items called counterfeit
    return MixedRates(
        counterfeit_share=(share.low, share.high),
        counterfeits_passed=passed,
        authentic_called=called,
        false_authentic_at_high=decision_error_rate(
            passed, float(auto_authentic[authentic].mean()), share.high
        )
        if auto_authentic.any()
        else None,
        false_counterfeit_at_low=decision_error_rate(
            called, float(auto_counterfeit[counterfeit].mean()), 1 - share.low
        )
        if auto_counterfeit.any()
        else None,
    )


def risk_coverage(p_item: np.ndarray, labels: np.ndarray) -> RiskCoverage:
    """Items taken most-confident first; risk = error rate of the 0.5 decision on those taken.
    AURC is the mean risk over all coverages (lower is better)."""
    if len(p_item) == 0:
        return RiskCoverage([], [], float("nan"))
    confidence = np.abs(p_item - 0.5)
    order = np.argsort(-confidence, kind="stable")
    wrong = ((p_item[order] >= 0.5) != (labels[order] > 0.5)).astype(float)
    taken = np.arange(1, len(order) + 1)
    risk = np.cumsum(wrong) / taken
    return RiskCoverage((taken / len(order)).tolist(), risk.tolist(), float(risk.mean()))


def by_cue_strength(items: ItemScores, routes: np.ndarray) -> list[CueStrengthRow]:
    """Synthetic data only: where counterfeits went, by the strength of their strongest cue."""
    fakes = np.flatnonzero((items.labels < 0.5) & ~np.isnan(items.cue_strength))
    if len(fakes) == 0:
        return []
    rows = []
    for low, high in itertools.pairwise(CUE_STRENGTH_EDGES):
        chosen = [i for i in fakes if low <= items.cue_strength[i] < high]
        counts = Counter(routes[i] for i in chosen)
        rows.append(
            CueStrengthRow(
                cue_strength=f"{low:.1f}-{min(high, 1.0):.1f}",
                counterfeits=len(chosen),
                super_fakes=int(sum(items.super_fake[i] for i in chosen)),
                passed_as_authentic=counts.get(AUTO_AUTHENTIC, 0),
                to_human=counts.get(HUMAN, 0),
                caught_alone=counts.get(AUTO_COUNTERFEIT, 0),
            )
        )
    return rows


def passed_counterfeits(
    items: ItemScores, p_item: np.ndarray, routes: np.ndarray
) -> list[PassedCounterfeit]:
    """The counterfeits decided authentic without a person: the errors that cost most."""
    passed = (routes == AUTO_AUTHENTIC) & (items.labels < 0.5)
    return [
        PassedCounterfeit(
            item_id=items.item_ids[i],
            p_authentic=float(p_item[i]),
            super_fake=bool(items.super_fake[i]),
            cue_strength=None if np.isnan(items.cue_strength[i]) else float(items.cue_strength[i]),
        )
        for i in np.flatnonzero(passed)
    ]
