"""Certifying the two thresholds that split items into auto-authentic, auto-counterfeit and human.

The promise is about what the model decides alone, in traffic whose counterfeit share is only
known to lie in a declared range (`ShareRange`, e.g. 10% to 30%):
- of the items it calls authentic, the share that are counterfeit (the false-authentic rate)
  stays under a target (default 0.5%);
- of those it calls counterfeit, the share that are authentic (the false-counterfeit rate)
  under another (2%).

Both are rates conditional on the decision, so they depend on the mix: a 2% false-counterfeit
rate measured on a 50/50 calib split is about 15% at a 10% counterfeit share. So the calib split
certifies per-class rates instead, which do not depend on the mix, and the decision rate is
bounded at the worst share in the range. For the authentic side, with s the counterfeit share:

    false-authentic(s) = s * a / (s * a + (1 - s) * b)

where a is the share of counterfeits the threshold passes as authentic and b the share of
authentic items it passes. It grows with s, so the worst case is the top of the range; the
counterfeit side is the mirror image, worst at the bottom. The bound holds when an upper bound
of a and a lower bound of b put it under the target:

- b's lower bound is simultaneous over every threshold (the one-sided DKW inequality on the
  authentic items' scores), so it holds wherever the threshold ends up;
- given those bounds, each candidate threshold is a test of "a is small enough", with a
  one-sided Clopper-Pearson bound on the counterfeit items;
- candidates are tested in a fixed sequence (Bates et al., "Learn then Test"): the authentic
  items' scores from the highest down, starting at the first where a threshold with no error
  at all could pass, stopping at the first that fails. The sequence and the allowed a come from
  the authentic items alone, which are independent of the counterfeit items tested, so the
  chosen threshold holds with the stated confidence.

The two sides share the confidence (Bonferroni: 97.5% each for 95% overall) and each side splits
its share between its two bounds. Thresholds compare item log-odds, never probabilities, which
saturate at 1.0 above a log-odds of about 37. When no threshold passes, that side is never
decided alone and the evidence plan (`evidence_plan`) says how many more labelled items would
support it at the model's present error rates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from touchstone.decision import Thresholds
from touchstone.evaluation.bounds import (
    SideSpec,
    clopper_pearson_upper,
    coverage_lower,
    decision_error_rate,
)
from touchstone.evaluation.evidence_plan import evidence_plan
from touchstone.evaluation.targets import ShareRange, Targets

__all__ = ["ShareRange", "Targets", "certify", "certify_side"]


def certify_side(
    right: np.ndarray, wrong: np.ndarray, spec: SideSpec, stricter_than: float | None = None
) -> tuple[float | None, dict[str, Any]]:
    """Scores oriented so that higher means decided. `right`: the class this side decides
    (its share is the coverage); `wrong`: the class it must not decide. `stricter_than`:
    candidates must lie above it (where the other side's decisions begin). Returns the laxest
    passing threshold."""
    each, ratio = spec.per_bound, spec.ratio
    candidates = np.unique(right)[::-1]
    if stricter_than is not None:
        # Dropping the laxest candidates only shortens the sequence: still a valid test.
        candidates = candidates[candidates > stricter_than]
    right_sorted, wrong_sorted = np.sort(right), np.sort(wrong)
    n_right, n_wrong = len(right), len(wrong)
    evidence: dict[str, Any] = {
        "decides": spec.decides,
        "target": spec.target,
        f"worst_{spec.wrong_class}_share": spec.wrong_prevalence,
        f"{spec.decides}_items": n_right,
        f"{spec.wrong_class}_items": n_wrong,
        "confidence": spec.confidence,
    }
    best_possible = clopper_pearson_upper(0, n_wrong, each)
    chosen: tuple[float, int, int, float, float] | None = None
    started = False
    for t in candidates:
        right_decided = n_right - int(np.searchsorted(right_sorted, t, side="left"))
        right_low = coverage_lower(right_decided, n_right, spec)
        allowed = ratio * right_low
        if not started:
            # Label-free for the wrong class: skip thresholds no error-free result could pass.
            if best_possible > allowed:
                continue
            started = True
        errors = n_wrong - int(np.searchsorted(wrong_sorted, t, side="left"))
        upper = clopper_pearson_upper(errors, n_wrong, each)
        if upper > allowed:
            break
        chosen = (float(t), right_decided, errors, upper, right_low)
    if chosen is None:
        evidence["supported"] = False
        evidence["reason"] = (
            f"no threshold passes: with up to {spec.wrong_prevalence:.0%} {spec.wrong_class} "
            f"items in traffic, bounding this rate under {spec.target:.2%} at "
            f"{spec.confidence:.1%} confidence needs more labelled items than the "
            f"{n_right} {spec.decides} and {n_wrong} {spec.wrong_class} ones certified on, or "
            "fewer errors (see the evidence plan)"
        )
        return None, evidence
    threshold, decided, errors, upper, right_low = chosen
    evidence.update(
        supported=True,
        threshold=threshold,
        decided=decided,
        errors=errors,
        # The share of the class it decides (its coverage) and the share of the other class
        # it decides wrongly, with the bounds that certify the rate.
        class_coverage=decided / n_right,
        class_coverage_lower=right_low,
        error_share=errors / n_wrong,
        error_share_upper=upper,
        rate_bound=decision_error_rate(upper, right_low, spec.wrong_prevalence),
    )
    return threshold, evidence


def certify(log_odds: np.ndarray, labels: np.ndarray, targets: Targets) -> tuple[Thresholds, dict]:
    """Item log-odds and labels (1 authentic, 0 counterfeit) of the certification sample:
    the thresholds (log-odds) and the evidence for each side, with its evidence plan."""
    z = np.asarray(log_odds, dtype=np.float64)
    y = np.asarray(labels) > 0.5
    per_side = 1 - (1 - targets.confidence) / 2
    share = targets.counterfeit_share
    authentic_spec = SideSpec(
        "false_authentic", "authentic", "counterfeit", targets.false_authentic, share.high, per_side
    )
    counterfeit_spec = SideSpec(
        "false_counterfeit",
        "counterfeit",
        "authentic",
        targets.false_counterfeit,
        1 - share.low,
        per_side,
    )
    authentic_at, authentic_evidence = certify_side(z[y], z[~y], authentic_spec)
    # The counterfeit side looks at negated scores (lower log-odds: decided counterfeit), and
    # its threshold must stay below the authentic one.
    negated, counterfeit_evidence = certify_side(
        -z[~y], -z[y], counterfeit_spec, None if authentic_at is None else -authentic_at
    )
    counterfeit_at = None if negated is None else -negated
    if counterfeit_at is not None:
        counterfeit_evidence["threshold"] = counterfeit_at
    for spec, evidence, right, wrong in (
        (authentic_spec, authentic_evidence, z[y], z[~y]),
        (counterfeit_spec, counterfeit_evidence, -z[~y], -z[y]),
    ):
        if not evidence["supported"]:
            evidence["plan"] = evidence_plan(right, wrong, spec)
    evidence = {
        "false_authentic": authentic_evidence,
        "false_counterfeit": counterfeit_evidence,
        "confidence": targets.confidence,
        "confidence_per_side": per_side,
        "counterfeit_share": {"low": share.low, "high": share.high},
        "items": {"authentic": int(y.sum()), "counterfeit": int((~y).sum())},
    }
    return Thresholds(authentic_at, counterfeit_at), evidence
