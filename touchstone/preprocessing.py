"""How a model wants its photos: the preprocessing that travels with its weights, and the
evaluation-time transform that training, evaluation and serving all run.

Decoding comes first, in `touchstone.imaging` (which re-exports these names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its input: travels with the weights (timm's pretrained_cfg) and is
    written into the model card, so that trainer and server cannot drift."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"
    crop_pct: float = 1.0


_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def resize_and_crop(image: Image.Image, prep: Preprocessing) -> Image.Image:
    """Resize the shorter side to input_size / crop_pct, then centre-crop a square."""
    scaled = round(prep.input_size / prep.crop_pct)
    width, height = image.size
    if width <= height:
        new_size = (scaled, max(scaled, round(height * scaled / width)))
    else:
        new_size = (max(scaled, round(width * scaled / height)), scaled)
    resized = image.resize(new_size, _RESAMPLE[prep.interpolation])
    left = (new_size[0] - prep.input_size) // 2
    top = (new_size[1] - prep.input_size) // 2
    return resized.crop((left, top, left + prep.input_size, top + prep.input_size))


def normalize(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW, scaled to 0..1 then normalised with the model's mean/std."""
    array = pixels.astype(np.float32) / 255.0
    array = (array - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def to_model_input(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """The evaluation-time transform: the one that serving runs on every photo."""
    return normalize(np.asarray(resize_and_crop(image, prep)), prep)
