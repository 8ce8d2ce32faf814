"""How far a counterfeit sits from the authentic: cue strengths per region, by difficulty.

A cue strength of 0 is indistinguishable from authentic manufacturing; 1 is a crude fake.
Each counterfeit region gets one primary cue at the region's strength and some secondary cues
weaker, as real fakes get one thing visibly wrong and others slightly. Super-fakes are as good as
authentic on all regions but one, which is wrong only faintly; at `hard` some are perfect
replicas, wrong nowhere, so that no model (and no person looking at photos) can catch them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REGION_CUES: dict[str, tuple[str, ...]] = {
    "hardware": (
        "font_weight",
        "letter_spacing",
        "engraving_depth",
        "edge_sharpness",
        "plating_tone",
    ),
    "stitching": (
        "pitch_regularity",
        "stitch_angle",
        "thread_width",
        "thread_colour",
        "edge_paint",
    ),
    "logo": ("proportions", "spacing", "alignment", "print_quality"),
}

# Fakes fail in typical directions: cast or re-stamped marks come out bolder, shallower and
# softer, cheap plating drifts brassy, machine stitching lies flatter than hand-slanted saddle
# stitching. These cues only ever move one way; the ones below go either way.
TWO_WAY_CUES = frozenset({"letter_spacing", "thread_width", "proportions", "spacing"})


@dataclass(frozen=True)
class Difficulty:
    name: str
    strength: tuple[float, float]  # a counterfeit region's strength is uniform in this range
    super_fake_share: float  # share of counterfeits that are super-fakes
    replica_share: float  # share of super-fakes wrong on no region at all
    faint: tuple[float, float]  # strength of a super-fake's one wrong region


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty("easy", (0.6, 1.0), 0.0, 0.0, (0.0, 0.0)),
    "standard": Difficulty("standard", (0.3, 0.9), 0.10, 0.0, (0.1, 0.3)),
    "hard": Difficulty("hard", (0.12, 0.6), 0.25, 0.2, (0.05, 0.2)),
}


@dataclass(frozen=True)
class RegionCues:
    """What is wrong with one region of one item: per-cue strength and direction."""

    strength: float
    cues: dict[str, float]
    signs: dict[str, float]

    def get(self, cue: str) -> float:
        """Signed strength of a cue, in [-1, 1]."""
        return self.cues.get(cue, 0.0) * self.signs.get(cue, 1.0)

    def magnitude(self, cue: str) -> float:
        return self.cues.get(cue, 0.0)

    def describe(self) -> str:
        return ";".join(f"{k}={v:.2f}" for k, v in self.cues.items() if v > 0)


AUTHENTIC = RegionCues(0.0, {}, {})


def sample_counterfeit(
    rng: np.random.Generator, regions: tuple[str, ...], difficulty: Difficulty
) -> tuple[dict[str, RegionCues], bool]:
    """Cue strengths for every region of one counterfeit item, and whether it is a super-fake."""
    super_fake = bool(rng.random() < difficulty.super_fake_share)
    strengths = {r: float(rng.uniform(*difficulty.strength)) for r in regions}
    if super_fake:
        wrong = regions[int(rng.integers(len(regions)))]
        replica = bool(rng.random() < difficulty.replica_share)
        for region in regions:
            strengths[region] = 0.0
        if not replica:
            strengths[wrong] = float(rng.uniform(*difficulty.faint))
    return {r: _spread(rng, r, s) for r, s in strengths.items()}, super_fake


def _spread(rng: np.random.Generator, region: str, strength: float) -> RegionCues:
    if strength <= 0.0:
        return AUTHENTIC
    names = REGION_CUES[region]
    primary = int(rng.integers(len(names)))
    cues: dict[str, float] = {}
    signs: dict[str, float] = {}
    for index, name in enumerate(names):
        if index == primary:
            weight = 1.0
        else:
            weight = float(rng.uniform(0.0, 0.6)) if rng.random() < 0.5 else 0.0
        cues[name] = round(strength * weight, 4)
        two_ways = name in TWO_WAY_CUES
        signs[name] = -1.0 if two_ways and rng.random() < 0.5 else 1.0
    return RegionCues(round(strength, 4), cues, signs)
