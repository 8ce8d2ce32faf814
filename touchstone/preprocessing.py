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


def shorter_side(prep: Preprocessing) -> int:
    """The length the photo's shorter side is resized to before the centre crop."""
    return round(prep.input_size / prep.crop_pct)


def resize_shorter_side(image: Image.Image, prep: Preprocessing) -> Image.Image:
    """Resize, keeping the aspect ratio, so the shorter side is `shorter_side(prep)`: the first
    half of the serving transform. Training caches its result, the heatmap covers cells of it;
    resizing it again to the same size is an exact copy, so both then match serving's pixels."""
    scaled = shorter_side(prep)
    width, height = image.size
    if width <= height:
        new_size = (scaled, max(scaled, round(height * scaled / width)))
    else:
        new_size = (max(scaled, round(width * scaled / height)), scaled)
    return image.resize(new_size, _RESAMPLE[prep.interpolation])


def centre_crop(image: Image.Image, prep: Preprocessing) -> Image.Image:
    """The centre `input_size` square."""
    left = (image.width - prep.input_size) // 2
    top = (image.height - prep.input_size) // 2
    return image.crop((left, top, left + prep.input_size, top + prep.input_size))


def resize_and_crop(image: Image.Image, prep: Preprocessing) -> Image.Image:
    """Resize the shorter side to input_size / crop_pct, then centre-crop a square."""
    return centre_crop(resize_shorter_side(image, prep), prep)


def normalize(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW, scaled to 0..1 then normalised with the model's mean/std."""
    array = pixels.astype(np.float32) / 255.0
    array = (array - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def to_model_input(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """The evaluation-time transform: the one that serving runs on every photo."""
    return normalize(np.asarray(resize_and_crop(image, prep)), prep)
