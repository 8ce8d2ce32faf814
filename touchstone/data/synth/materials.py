"""Surface textures: leather grain, coated canvas, brushed and polished metal.

Textures are cut from banks made once per process from the data set's seed, so a photo costs a
slice rather than a fresh noise field: that is what keeps generation above 200 crops a second.
All scales are fractions of the canvas side, so the look is the same at any output size.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from touchstone.data.synth.drawing import colourise


def smooth_noise(rng: np.random.Generator, side: int, feature: float) -> np.ndarray:
    """Gaussian noise with features about `feature` pixels wide, zero mean and unit spread."""
    coarse = max(2, int(side / max(feature, 1.0)) + 2)
    small = rng.standard_normal((coarse, coarse)).astype(np.float32)
    field = np.asarray(
        Image.fromarray(small, mode="F").resize((side, side), Image.Resampling.BICUBIC)
    )
    return _standardise(field)


def _standardise(field: np.ndarray) -> np.ndarray:
    field = field - field.mean()
    return (field / (field.std() + 1e-6)).astype(np.float32)


class TextureBank:
    """Grey texture fields (zero mean, unit spread) and sensor noise, cut out by offset."""

    def __init__(self, seed: int, canvas: int) -> None:
        rng = np.random.default_rng([seed, 0x7E57])
        self.canvas = canvas
        side = self.side = 2 * canvas
        unit = canvas / 280.0  # features were tuned on a 280 px canvas
        tone = smooth_noise(rng, side, 60 * unit)
        cells = smooth_noise(rng, side, 7 * unit)
        fine = rng.standard_normal((side, side)).astype(np.float32)
        creases = np.exp(-((cells / 0.45) ** 2))
        y, x = np.mgrid[0:side, 0:side].astype(np.float32)
        period = 7.0 * unit
        weave = np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period)
        twill = np.sin(2 * np.pi * (x + y) / (3.1 * period))
        streak_rows = rng.standard_normal((side, max(2, side // 48))).astype(np.float32)
        streaks = np.asarray(
            Image.fromarray(streak_rows, mode="F").resize((side, side), Image.Resampling.BILINEAR)
        )
        self.fields: dict[str, np.ndarray] = {
            "pebble": _standardise(0.5 * tone - 1.2 * creases + 0.25 * fine),
            "smooth": _standardise(tone + 0.08 * fine),
            "canvas": _standardise(0.6 * weave + 0.3 * twill + 0.25 * tone + 0.2 * fine),
            "brushed": _standardise(streaks + 0.3 * np.roll(streaks, 1, axis=0) + 0.15 * fine),
            "polished": _standardise(tone + 0.03 * fine),
        }
        self.noise = rng.standard_normal((side, side, 3)).astype(np.float32)

    def field(self, name: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        bank = self.fields[name]
        y = int(rng.integers(0, self.side - height + 1))
        x = int(rng.integers(0, self.side - width + 1))
        return bank[y : y + height, x : x + width]

    def sensor_noise(self, rng: np.random.Generator, side: int) -> np.ndarray:
        y = int(rng.integers(0, self.side - side + 1))
        x = int(rng.integers(0, self.side - side + 1))
        return self.noise[y : y + side, x : x + side]


def surface(
    bank: TextureBank,
    rng: np.random.Generator,
    texture: str,
    colour: tuple[float, float, float],
    side: int,
    relief: float = 0.12,
) -> np.ndarray:
    """A float32 HxWx3 surface of `colour` with `texture` relief (about +-relief in brightness)."""
    return colourise(1.0 + relief * bank.field(texture, rng, side, side), colour)


def linear_light(side: int, angle: float, amount: float, centre: float = 0.0) -> np.ndarray:
    """A brightness ramp across the canvas, 1 +- amount, along direction `angle` (radians)."""
    coords = (np.arange(side, dtype=np.float32) / max(side - 1, 1)) - 0.5
    ramp = math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None]
    return (1.0 + amount * 2.0 * (ramp - centre)).astype(np.float32, copy=False)
