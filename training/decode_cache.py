"""Each photo decoded once per run, not once per epoch.

A 12-megapixel phone JPEG takes tens of milliseconds to decode even at a reduced scale, more
than a small model's step per photo on a CPU; an epoch would wait on the JPEG decoder. So
before the first epoch every photo is decoded, turned upright, cropped to its bbox and resized
to the shorter side the model's preprocessing asks for (`shorter_side(prep)`), once, in a pool
of threads (Pillow lets go of the GIL while it decodes), and the epochs read the result.

The cache lives in memory, as one uint8 array per photo: at 224 px (crop_pct 0.875) a 4:3
photo is 341x256x3 = 262 KB, so 10,000 photos take 2.6 GB (5.4 GB at 320 px). Memory was
chosen over files under the run: reading it costs nothing, the loader's worker processes share
it without copying (they are forked after it is built), and there is nothing on disk to go
stale or half-written after a crash. A set too large for memory would want the same arrays in
memory-mapped files.

Entries are keyed by the photo's bytes (sha256), the preprocessing's geometry, the bbox and
the cache's format, so one cache serves the train and validation sets, and a photo listed
twice (or the same photo under two names) is decoded once.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from touchstone.bbox import BBox
from touchstone.data.manifest import PhotoRecord
from touchstone.imaging import DEFAULT_MAX_PIXELS, PhotoError, Preprocessing, decode_for_model
from touchstone.preprocessing import resize_shorter_side

# Bump when what an entry holds changes (its size, colour handling, crop), so that an entry of
# an older format is never read as a newer one.
CACHE_FORMAT = 1


class CacheKey(NamedTuple):
    photo_sha256: str
    input_size: int
    crop_pct: float
    interpolation: str
    bbox: tuple[int, int, int, int] | None
    format: int = CACHE_FORMAT


def cache_key(data: bytes, prep: Preprocessing, bbox: BBox | None) -> CacheKey:
    box = (bbox.x0, bbox.y0, bbox.x1, bbox.y1) if bbox is not None else None
    return CacheKey(
        hashlib.sha256(data).hexdigest(), prep.input_size, prep.crop_pct, prep.interpolation, box
    )


def decode_for_training(
    source: bytes | str | Path,
    prep: Preprocessing,
    bbox: BBox | None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """The photo as training keeps it: decoded at a reduced scale, upright, cropped to the
    bbox, shorter side resized to `shorter_side(prep)`; uint8 HxWx3. Serving's model input is
    `to_model_input` of this, to the pixel. PhotoError if it cannot be decoded."""
    reduced = decode_for_model(source, prep, bbox=bbox, max_pixels=max_pixels)
    return np.asarray(resize_shorter_side(reduced.image, prep))


class DecodeCache:
    """Photos decoded for training, in memory, by key."""

    def __init__(self) -> None:
        self._images: dict[CacheKey, np.ndarray] = {}
        self._lock = threading.Lock()
        self.decodes = 0  # photos decoded so far (a cached photo is not decoded again)

    def __len__(self) -> int:
        return len(self._images)

    def image(self, key: CacheKey) -> np.ndarray:
        return self._images[key]

    def add(
        self,
        records: Sequence[PhotoRecord],
        prep: Preprocessing,
        *,
        workers: int = 1,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        console: Console | None = None,
        show_progress: bool = True,
    ) -> list[CacheKey | None]:
        """Decode the records' photos not cached yet; return each record's key, None for a
        photo that cannot be read or decoded (training skips and counts it, as ever)."""

        def one(record: PhotoRecord) -> CacheKey | None:
            try:
                data = Path(record.path).read_bytes()
            except OSError:
                return None
            key = cache_key(data, prep, record.bbox)
            with self._lock:
                if key in self._images:
                    return key
            try:
                pixels = decode_for_training(data, prep, record.bbox, max_pixels)
            except PhotoError:
                return None
            with self._lock:
                self._images.setdefault(key, pixels)
                self.decodes += 1
            return key

        progress = Progress(
            TextColumn("decoding photos"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not show_progress,
        )
        with progress, ThreadPoolExecutor(max(1, workers)) as pool:
            task = progress.add_task("decode", total=len(records))
            keys = []
            for key in pool.map(one, records):
                keys.append(key)
                progress.advance(task)
        return keys
