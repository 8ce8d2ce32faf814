"""From photo scores to an item decision: the rule that evaluation fits and serving applies.

The network gives each photo a log-odds of *authentic* for its region. An item's log-odds is

    bias + sum over regions r of  weight_r * mean(log-odds of the item's photos of region r)

with weights >= 0 fitted on the `val` split (a logistic regression, so the result is already a
calibrated probability). Log-odds add evidence: one region that is clearly counterfeit (a very
negative log-odds) pulls the whole item down however good the others look. Photos of the same
region are averaged, not summed, because three shots of one engraving are not three independent
pieces of evidence. A region with no photo adds nothing.

Two thresholds on the item log-odds then split items three ways: auto-authentic, auto-
counterfeit, and human review. A threshold that the calibration data could not support is None,
and that side is never decided automatically. Neither applies to an item that lacks a region its
category's items were certified with (`missing_regions`): a counterfeiter leaves out the region
that would show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

AUTO_AUTHENTIC = "authentic"
AUTO_COUNTERFEIT = "counterfeit"
HUMAN = "human"
Route = Literal["authentic", "counterfeit", "human"]


def sigmoid(log_odds: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(log_odds, dtype=np.float64), -60, 60)))


@dataclass(frozen=True)
class ItemAggregation:
    regions: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float = 0.0

    @classmethod
    def uncalibrated(cls, regions: Sequence[str]) -> ItemAggregation:
        """Every region weighs 1: the plain sum of region log-odds, before fitting."""
        return cls(tuple(regions), tuple(1.0 for _ in regions), 0.0)

    def region_features(
        self, item_index: np.ndarray, region_index: np.ndarray, log_odds: np.ndarray, items: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean log-odds per (item, region), and which of them have a photo at all."""
        sums = np.zeros((items, len(self.regions)))
        counts = np.zeros((items, len(self.regions)))
        np.add.at(sums, (item_index, region_index), log_odds)
        np.add.at(counts, (item_index, region_index), 1.0)
        present = counts > 0
        means = np.divide(sums, counts, out=np.zeros_like(sums), where=present)
        return means, present

    def item_log_odds_from_features(self, means: np.ndarray) -> np.ndarray:
        # Absent regions hold 0 in `means`, so they add nothing.
        return self.bias + means @ np.asarray(self.weights, dtype=np.float64)

    def item_log_odds(self, photos: Sequence[tuple[str, float]]) -> float:
        """One item from its (region, photo log-odds) pairs: what serving calls per appraisal."""
        if not photos:
            raise ValueError("an item needs at least one scored photo")
        index = {name: i for i, name in enumerate(self.regions)}
        unknown = sorted({region for region, _ in photos if region not in index})
        if unknown:
            raise ValueError(f"regions not in the model's vocabulary: {', '.join(unknown)}")
        region_index = np.array([index[region] for region, _ in photos])
        values = np.array([float(score) for _, score in photos])
        means, _ = self.region_features(np.zeros(len(photos), int), region_index, values, 1)
        return float(self.item_log_odds_from_features(means)[0])


@dataclass(frozen=True)
class Thresholds:
    """On the item's log-odds of authentic, never its probability (which saturates at 1.0
    above a log-odds of about 37): `authentic_at`: at or above it the item is decided authentic
    alone; `counterfeit_at`: at or below it, counterfeit alone. None: never on that side."""

    authentic_at: float | None
    counterfeit_at: float | None

    def __post_init__(self) -> None:
        for value in (self.authentic_at, self.counterfeit_at):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"a threshold is a finite log-odds, got {value}")
        if (
            self.authentic_at is not None
            and self.counterfeit_at is not None
            and self.counterfeit_at >= self.authentic_at
        ):
            raise ValueError("counterfeit_at must lie below authentic_at")

    @property
    def sides(self) -> int:
        """How many sides the model may decide alone (0, 1 or 2)."""
        return (self.authentic_at is not None) + (self.counterfeit_at is not None)

    def route(self, log_odds: float) -> Route:
        if math.isnan(log_odds):
            return HUMAN
        if self.authentic_at is not None and log_odds >= self.authentic_at:
            return AUTO_AUTHENTIC
        if self.counterfeit_at is not None and log_odds <= self.counterfeit_at:
            return AUTO_COUNTERFEIT
        return HUMAN

    def routes(self, log_odds: np.ndarray) -> np.ndarray:
        """`route` over an array (NaN goes to a human)."""
        z = np.asarray(log_odds, dtype=np.float64)
        out = np.full(z.shape, HUMAN, dtype=object)
        if self.counterfeit_at is not None:
            out[z <= self.counterfeit_at] = AUTO_COUNTERFEIT
        if self.authentic_at is not None:
            out[z >= self.authentic_at] = AUTO_AUTHENTIC
        return out


def photo_probability(log_odds: np.ndarray | float, temperature: float) -> np.ndarray:
    """A single photo's calibrated p(authentic): temperature scaling of its log-odds."""
    return sigmoid(np.asarray(log_odds, dtype=np.float64) / temperature)


def required_regions(
    categories: Sequence[str], present: np.ndarray, regions: Sequence[str]
) -> dict[str, tuple[str, ...]]:
    """For each category, the regions most of its certification items show (`present`: items x
    regions). Those items are what the thresholds were certified on; an item of the category
    without one of them is a pattern the certification never saw."""
    required = {}
    for category in sorted(set(categories)):
        rows = present[np.array([c == category for c in categories])]
        shown = rows.mean(axis=0) > 0.5
        required[category] = tuple(r for r, s in zip(regions, shown, strict=True) if s)
    return required


def missing_regions(
    category: str | None, shown: Sequence[str], required: dict[str, tuple[str, ...]]
) -> list[str]:
    """The regions an item of `category` must show to be decided alone and does not. A category
    the certification never saw requires every region any category requires."""
    needed = required.get(category or "")
    if needed is None:
        needed = tuple(sorted({r for regions in required.values() for r in regions}))
    return [region for region in needed if region not in set(shown)]
