"""Choosing the two thresholds that split items into auto-authentic, auto-counterfeit and human.

The promise is about what the model decides alone. Of the items it calls authentic, the share
that are counterfeit (the false-authentic rate) must stay under a target (default 0.5%); of
those it calls counterfeit, the share that are authentic (the false-counterfeit rate) under
another (2%). Both are conditional on the decision, which is stricter than dividing by all auto
decisions, and each is bounded, not estimated: a threshold is accepted only when the one-sided
Clopper-Pearson upper bound of its rate, at 95% confidence, lies under the target.

Thresholds are tested in a fixed sequence (Bates et al., "Learn then Test"): from the strictest
threshold that could pass at all, decided from the number of items alone (a threshold that
decides n items needs n >= log(1 - confidence) / log(1 - target) with no error), towards laxer
ones, stopping at the first that fails. The order does not look at labels, so the chosen
threshold meets its target with the stated confidence. The two sides share the confidence
(Bonferroni: 97.5% each for 95% overall), so both targets hold together. Coverage is the largest
that passes. When none passes, that side is never decided automatically, and the evidence says
why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta

from touchstone.decision import Thresholds


@dataclass(frozen=True)
class Targets:
    false_authentic: float = 0.005
    false_counterfeit: float = 0.02
    confidence: float = 0.95


def clopper_pearson_upper(errors: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound of a binomial rate."""
    if n == 0 or errors >= n:
        return 1.0
    return float(beta.ppf(confidence, errors + 1, n - errors))


def clopper_pearson_interval(errors: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided interval, for reports."""
    if n == 0:
        return 0.0, 1.0
    alpha = 1 - confidence
    low = 0.0 if errors == 0 else float(beta.ppf(alpha / 2, errors, n - errors + 1))
    high = 1.0 if errors == n else float(beta.ppf(1 - alpha / 2, errors + 1, n - errors))
    return low, high


def items_needed(target: float, confidence: float) -> int:
    """The fewest decisions that can bound a rate under `target` (with no error at all)."""
    return math.ceil(math.log(1 - confidence) / math.log(1 - target))


def _one_side(
    scores: np.ndarray, wrong: np.ndarray, target: float, confidence: float
) -> tuple[float | None, dict[str, Any]]:
    """`scores` oriented so that higher means decided; returns the laxest passing threshold."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_wrong = scores[order], wrong[order]
    # A threshold decides every item at or above it: candidates end where a score changes.
    ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True]) + 1
    errors = np.cumsum(sorted_wrong)[ends - 1]
    needed = items_needed(target, confidence)
    evidence: dict[str, Any] = {
        "target": target,
        "items_needed": needed,
        "calib_items": len(scores),
    }
    chosen: int | None = None
    for i, n in enumerate(ends):
        if n < needed:
            continue
        if clopper_pearson_upper(int(errors[i]), int(n), confidence) > target:
            break
        chosen = i
    if chosen is None:
        evidence["supported"] = False
        evidence["reason"] = (
            f"no threshold passes: bounding this rate under {target:.2%} at "
            f"{confidence:.1%} confidence needs at least {needed} decided items with no error "
            f"(more with errors); the calibration split has {len(scores)} items"
        )
        return None, evidence
    n, k = int(ends[chosen]), int(errors[chosen])
    evidence.update(
        supported=True,
        decided=n,
        errors=k,
        rate=k / n,
        upper_bound=clopper_pearson_upper(k, n, confidence),
        coverage=n / len(scores),
    )
    return float(sorted_scores[ends[chosen] - 1]), evidence


def choose_thresholds(
    p_authentic: np.ndarray, labels: np.ndarray, targets: Targets
) -> tuple[Thresholds, dict[str, Any]]:
    """`labels`: 1 authentic, 0 counterfeit. Returns the thresholds and the evidence for each."""
    p = np.asarray(p_authentic, dtype=np.float64)
    per_side = 1 - (1 - targets.confidence) / 2
    authentic_at, authentic_evidence = _one_side(p, labels < 0.5, targets.false_authentic, per_side)
    # The counterfeit side only considers items the authentic side leaves undecided.
    open_items = p < authentic_at if authentic_at is not None else np.ones(len(p), bool)
    negated, counterfeit_evidence = _one_side(
        -p[open_items], labels[open_items] > 0.5, targets.false_counterfeit, per_side
    )
    counterfeit_at = None if negated is None else -negated
    evidence = {
        "false_authentic": authentic_evidence,
        "false_counterfeit": counterfeit_evidence,
        "confidence": targets.confidence,
        "confidence_per_side": per_side,
    }
    return Thresholds(authentic_at, counterfeit_at), evidence
