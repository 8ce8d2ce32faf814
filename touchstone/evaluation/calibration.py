"""Calibration: temperature scaling of photo log-odds and the item aggregation, both fitted on
the `calib` split; and the measures of how well probabilities are calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from touchstone.decision import ItemAggregation, sigmoid
from touchstone.evaluation.metrics import log_loss

ECE_BINS = 15


@dataclass(frozen=True)
class CalibrationMeasures:
    """How far probabilities are from outcomes: ECE, negative log-likelihood, Brier score."""

    ece: float
    nll: float
    brier: float


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram: mean predicted p, observed share authentic, count."""

    predicted: float
    observed: float
    count: int


def fit_temperature(log_odds: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the NLL of sigmoid(log_odds / T) (Guo et al., 2017)."""
    if len(log_odds) == 0 or labels.min() == labels.max():
        return 1.0
    result = minimize_scalar(
        lambda log_t: log_loss(log_odds / np.exp(log_t), labels),
        bounds=(-4.0, 4.0),
        method="bounded",
    )
    return float(np.exp(result.x))


def fit_item_aggregation(
    means: np.ndarray, labels: np.ndarray, regions: tuple[str, ...], l2: float = 1e-3
) -> ItemAggregation:
    """Logistic regression of item labels on per-region mean log-odds, weights kept >= 0 (a
    region whose photos look more authentic never makes its item less so). A small L2 penalty
    keeps the fit finite when the calibration items are perfectly separable."""
    if len(labels) == 0 or labels.min() == labels.max():
        return ItemAggregation.uncalibrated(regions)
    count = len(labels)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = theta[0] + means @ theta[1:]
        p = sigmoid(z)
        loss = log_loss(z, labels) + l2 * float(theta[1:] @ theta[1:])
        residual = (p - labels) / count
        grad = np.concatenate([[residual.sum()], means.T @ residual + 2 * l2 * theta[1:]])
        return loss, grad

    start = np.concatenate([[0.0], np.full(len(regions), 1.0 / len(regions))])
    bounds = [(None, None)] + [(0.0, None)] * len(regions)
    result = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds)
    theta = result.x
    return ItemAggregation(tuple(regions), tuple(float(w) for w in theta[1:]), float(theta[0]))


def calibration_measures(p: np.ndarray, labels: np.ndarray) -> CalibrationMeasures:
    """ECE (15 equal-width bins of p(authentic)), NLL and Brier score."""
    if len(p) == 0:
        return CalibrationMeasures(float("nan"), float("nan"), float("nan"))
    p = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    bins = np.minimum((p * ECE_BINS).astype(int), ECE_BINS - 1)
    ece = 0.0
    for b in range(ECE_BINS):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(p[mask].mean() - labels[mask].mean())
    nll = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    brier = np.mean((p - labels) ** 2)
    return CalibrationMeasures(float(ece), float(nll), float(brier))


def reliability_bins(p: np.ndarray, labels: np.ndarray) -> list[ReliabilityBin]:
    """Per bin: mean predicted p, observed share authentic, count (for the diagram)."""
    bins = np.minimum((p * ECE_BINS).astype(int), ECE_BINS - 1)
    rows = []
    for b in range(ECE_BINS):
        mask = bins == b
        if mask.any():
            rows.append(
                ReliabilityBin(
                    predicted=float(p[mask].mean()),
                    observed=float(labels[mask].mean()),
                    count=int(mask.sum()),
                )
            )
    return rows
