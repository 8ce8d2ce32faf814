"""The statistics the certification rests on: confidence bounds of a share, and how per-class
shares turn into the error rate of a decision at a given mix of classes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import beta


@dataclass(frozen=True)
class SideSpec:
    """One side of the decision: its target and how it is bounded."""

    name: str  # false_authentic or false_counterfeit
    decides: str  # the class this side decides: authentic or counterfeit
    wrong_class: str  # the class it must not decide
    target: float
    wrong_prevalence: float  # the worst share of the wrong class in the declared range
    confidence: float  # this side's share of the overall confidence

    @property
    def per_bound(self) -> float:
        """Each side bounds two shares (one per class): each gets half of its risk."""
        return 1 - (1 - self.confidence) / 2

    @property
    def ratio(self) -> float:
        return allowed_ratio(self.target, self.wrong_prevalence)


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


def dkw_margin(n: int, confidence: float) -> float:
    """How far a share can lie below its estimate, at every threshold at once (one-sided
    Dvoretzky-Kiefer-Wolfowitz with Massart's constant)."""
    if n == 0:
        return 1.0
    return math.sqrt(math.log(1 / (1 - confidence)) / (2 * n))


def decision_error_rate(wrong_share: float, right_share: float, wrong_prevalence: float) -> float:
    """The share of decided items that are wrong, when `wrong_share` of the wrong class and
    `right_share` of the right class are decided and the wrong class is `wrong_prevalence` of
    traffic."""
    wrong = wrong_prevalence * wrong_share
    decided = wrong + (1 - wrong_prevalence) * right_share
    return 1.0 if decided <= 0 else wrong / decided


def allowed_ratio(target: float, wrong_prevalence: float) -> float:
    """The largest wrong-class share per right-class share that keeps the decision error rate
    at `wrong_prevalence` under `target`."""
    return target / (1 - target) * (1 - wrong_prevalence) / wrong_prevalence


def coverage_lower(decided: int, n_right: int, spec: SideSpec) -> float:
    """The lower bound of the share of its class a threshold decides (`decided` of `n_right`),
    valid at every threshold at once."""
    if n_right == 0:
        return 0.0
    return max(0.0, decided / n_right - dkw_margin(n_right, spec.per_bound))


def passes(errors: int, n_wrong: int, decided: int, n_right: int, spec: SideSpec) -> bool:
    """Whether a threshold that decides `errors` of `n_wrong` and `decided` of `n_right` items
    bounds the side's decision error rate under its target."""
    upper = clopper_pearson_upper(errors, n_wrong, spec.per_bound)
    return upper <= spec.ratio * coverage_lower(decided, n_right, spec)
