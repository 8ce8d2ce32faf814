"""Photo-level metrics, overall and per region. Item-level decisions come with evaluation."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score


def photo_metrics(
    logits: np.ndarray, labels: np.ndarray, regions: np.ndarray, region_names: tuple[str, ...]
) -> dict[str, float]:
    """`logits` are log-odds of authentic; `labels` 1 for authentic. Keys: loss, accuracy,
    auc, count, and the same per region as `<region>/accuracy` etc."""
    out = _metrics(logits, labels)
    for index, name in enumerate(region_names):
        mask = regions == index
        if mask.any():
            for key, value in _metrics(logits[mask], labels[mask]).items():
                out[f"{name}/{key}"] = value
    return out


def log_loss(log_odds: np.ndarray, labels: np.ndarray) -> float:
    """Binary cross-entropy from log-odds, written to stay finite for any |log-odds|."""
    return float(np.mean(np.logaddexp(0.0, log_odds) - labels * log_odds))


def _metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    if len(logits) == 0:
        return {"count": 0.0}
    logits = logits.astype(np.float64)
    loss = log_loss(logits, labels)
    accuracy = np.mean((logits > 0) == (labels > 0.5))
    both = 0 < labels.sum() < len(labels)
    auc = roc_auc_score(labels, logits) if both else math.nan
    return {
        "loss": float(loss),
        "accuracy": float(accuracy),
        "auc": float(auc),
        "count": float(len(logits)),
    }
