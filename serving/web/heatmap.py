"""Where the model looked: occlusion sensitivity, computed with the model in service.

A grey patch (the model's mean colour, which normalises to zero) covers one cell of a grid at a
time; each covered copy goes through the same `to_model_input` and the same ONNX session as the
upload did, and a cell's heat is how much covering it lowers the photo's log-odds for its own
region. It needs nothing but ONNX Runtime, and it measures the model's output directly instead
of reading gradients: coarse (a 6x6 grid), but honest. Positive heat: the model read evidence of
authenticity there; negative: covering it made the item look *more* authentic, so the model saw
something counterfeit-like there.
"""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image

from touchstone.imaging import decode_for_model, to_model_input
from touchstone.inference import OnnxModel
from touchstone.preprocessing import resize_shorter_side

GRID = 6
BATCH = 16
# Below this drop in log-odds a cell stays clear: noise must not be painted as attention.
FLOOR = 0.05
MAX_SIDE = 768  # the overlay is stretched over the photo by the browser
OPACITY = 0.6
# Okabe-Ito colours, told apart with colour-blindness too, and rare in photos of brown leather
# and gold hardware (amber vanished on brass).
AUTHENTIC_RGB = (0, 158, 115)  # bluish green: covering this lowers the authenticity score
COUNTERFEIT_RGB = (204, 60, 160)  # reddish purple: covering this raises it


@dataclass(frozen=True)
class Occlusion:
    heat: np.ndarray  # (GRID, GRID) drop in log-odds when each cell is covered
    log_odds: float  # the uncovered photo's, as served


def occlusion(model: OnnxModel, image: Image.Image, region: str, grid: int = GRID) -> Occlusion:
    """`image`: the photo as the service reads it (`decode_for_model`)."""
    prep = model.preprocessing
    # Shrink first, with the transform's own resize: then `to_model_input` resizes it again to
    # the same size, an exact copy, so the uncovered copy scores as the upload did, and 37
    # copies stay cheap.
    small = resize_shorter_side(image, prep)
    size = small.size
    grey = tuple(round(m * 255) for m in prep.mean)
    copies = [to_model_input(small, prep)]
    for row in range(grid):
        for col in range(grid):
            covered = small.copy()
            box = (
                col * size[0] // grid,
                row * size[1] // grid,
                (col + 1) * size[0] // grid,
                (row + 1) * size[1] // grid,
            )
            covered.paste(grey, box)
            copies.append(to_model_input(covered, prep))
    batch = np.stack(copies)
    column = model.region_index[region]
    scores = np.concatenate(
        [model.predict(batch[i : i + BATCH])[:, column] for i in range(0, len(batch), BATCH)]
    ).astype(np.float64)
    return Occlusion((scores[0] - scores[1:]).reshape(grid, grid), float(scores[0]))


def overlay_png(heat: np.ndarray, photo_size: tuple[int, int]) -> bytes:
    """A semi-transparent PNG of the photo's aspect: green where the model found evidence of
    authenticity, purple where it found the opposite, clear where covering changed little."""
    strongest = max(float(np.abs(heat).max()), FLOOR)
    strength = np.clip((np.abs(heat) - FLOOR) / (strongest - FLOOR + 1e-9), 0, 1)
    rgba = np.zeros((*heat.shape, 4), np.uint8)
    rgba[heat > 0, :3] = AUTHENTIC_RGB
    rgba[heat <= 0, :3] = COUNTERFEIT_RGB
    rgba[..., 3] = np.round(strength * OPACITY * 255).astype(np.uint8)
    width, height = photo_size
    scale = min(1.0, MAX_SIDE / max(width, height))
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(rgba, "RGBA").resize(target, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def heatmap_png(model: OnnxModel, photo: bytes, region: str) -> bytes:
    """The overlay for a stored photo, read as serving read its upload, at the photo's aspect."""
    reduced = decode_for_model(photo, model.preprocessing)
    heat = occlusion(model, reduced.image, region).heat
    return overlay_png(heat, (reduced.width, reduced.height))


class HeatmapCache:
    """Overlays already made, per model and photo, and a lock so that one is computed at a
    time: reviewers pressing `h` together must not take the cores from the uploads. The lock is
    an asyncio one, so waiting requests hold no worker thread (the thread pool is small, and
    the database calls of every request need it)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.busy = asyncio.Lock()
        self._items: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()

    @staticmethod
    def key(model: OnnxModel, sha256: str, region: str) -> tuple[str, str, str]:
        return (f"{model.model_dir.path}@{model.card.version}", sha256, region)

    def get(self, key: tuple[str, str, str]) -> bytes | None:
        if key in self._items:
            self._items.move_to_end(key)
        return self._items.get(key)

    def put(self, key: tuple[str, str, str], png: bytes) -> None:
        self._items[key] = png
        while len(self._items) > self.size:
            self._items.popitem(last=False)
