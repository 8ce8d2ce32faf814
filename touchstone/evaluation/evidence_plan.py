"""The evidence plan: for a side the calib split cannot support, how many more labelled items,
at the model's present error rates, would support it, so an ML engineer knows what to collect.

For each candidate threshold (a quantile of the right class's scores) the plan keeps that
threshold's measured shares (errors per wrong-class item, decisions per right-class item) and
asks for the smallest sample, at calib's mix of classes, whose bounds would pass
(`bounds.passes`); the plan is the cheapest over the thresholds. The error share is Jeffreys'
estimate (errors + 1/2) / (items + 1), so that a small sample's lucky zero does not promise too
little.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from touchstone.evaluation.bounds import SideSpec, passes

CANDIDATES = 60  # quantiles of the right class tried as thresholds
MAX_SCALE = 1000.0  # beyond a thousand times calib, the model must improve instead


def evidence_plan(right: np.ndarray, wrong: np.ndarray, spec: SideSpec) -> dict[str, Any]:
    """Scores oriented so that higher means decided (see `thresholds.certify_side`)."""
    n_right, n_wrong = len(right), len(wrong)
    if n_right == 0 or n_wrong == 0:
        missing = spec.decides if n_right == 0 else spec.wrong_class
        return {
            "reachable": False,
            "reason": f"the certification sample has no {missing} items: label some",
        }
    best: dict[str, Any] | None = None
    for t in np.unique(np.quantile(right, np.linspace(0.0, 1.0, CANDIDATES))):
        # Jeffreys' estimate, not errors / n: on a small sample the best-looking thresholds
        # show no error by luck, and a plan that counts on none would come up short.
        error_share = (float(np.sum(wrong >= t)) + 0.5) / (n_wrong + 1)
        decided_share = float(np.mean(right >= t))
        if error_share >= spec.ratio * decided_share:
            continue  # no sample size makes this threshold pass at these shares
        scale = _smallest_scale(error_share, decided_share, n_right, n_wrong, spec)
        if scale is None:
            continue
        extra = math.ceil((scale - 1) * (n_right + n_wrong))
        if best is None or extra < best["extra_items"]:
            best = {
                "reachable": True,
                "extra_items": extra,
                # At the certification sample's own mix of the two classes.
                f"extra_{spec.decides}": math.ceil((scale - 1) * n_right),
                f"extra_{spec.wrong_class}": math.ceil((scale - 1) * n_wrong),
                "at_threshold": float(t),
                "class_coverage": decided_share,
                "error_share": error_share,
            }
    if best is None:
        return {
            "reachable": False,
            "reason": (
                f"at the present error rates no threshold passes even with {MAX_SCALE:.0f} "
                "times calib's items: the model must separate the classes better"
            ),
        }
    return best


def _smallest_scale(
    error_share: float, decided_share: float, n_right: int, n_wrong: int, spec: SideSpec
) -> float | None:
    def ok(scale: float) -> bool:
        wrong_items = math.ceil(scale * n_wrong)
        right_items = math.ceil(scale * n_right)
        errors = round(error_share * wrong_items)
        return passes(errors, wrong_items, round(decided_share * right_items), right_items, spec)

    if ok(1.0):
        return 1.0
    if not ok(MAX_SCALE):
        return None
    low, high = 1.0, MAX_SCALE
    while high / low > 1.01:
        middle = math.sqrt(low * high)
        low, high = (low, middle) if ok(middle) else (middle, high)
    return high
