"""Near-duplicate photos by perceptual hash: the same photo re-saved, resized or re-cropped.

Near-duplicates in two splits leak the answer from training into evaluation. Pairs are found
without comparing every photo with every other: by the pigeonhole principle, two 64-bit hashes
within distance d agree exactly on at least one of d + 1 bands, so only photos sharing a band
value are compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import imagehash
import numpy as np
from rich.progress import Progress

from touchstone.data.manifest import PhotoRecord
from touchstone.imaging import PhotoError, decode_reduced

# Measured by experiments/near-duplicates/run.py on the demo data (datasets/README.md): copies
# re-encoded at JPEG quality 50 or resized came at most 4 bits apart; of 5.5 million pairs of
# photos of different synthetic items, 13 came within 5 bits and 378 within 8. A crop of a few
# per cent moves the hash by up to 26 bits: re-cropped copies are beyond any threshold that
# spares distinct photos.
DEFAULT_MAX_DISTANCE = 5
# The hash reads a 32x32 grey copy: photos are decoded no smaller than 8 times that (a 12 MP
# JPEG at 1/8), so the shrink to it still averages many pixels, as from the full photo.
HASH_SIDE = 256


@dataclass(frozen=True)
class NearDuplicate:
    first: PhotoRecord
    second: PhotoRecord
    distance: int


def photo_hash(record: PhotoRecord) -> int | None:
    """64-bit DCT perceptual hash of the photo's region, or None if it cannot be decoded."""
    try:
        image = decode_reduced(record.path, HASH_SIDE, bbox=record.bbox).image
    except PhotoError:
        return None
    bits = imagehash.phash(image).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hash_photos(
    records: Sequence[PhotoRecord], workers: int = 4, show_progress: bool = True
) -> list[int | None]:
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        Progress(transient=True, disable=not show_progress) as progress,
    ):
        task = progress.add_task("hashing photos", total=len(records))
        hashes = []
        for value in pool.map(photo_hash, records):
            hashes.append(value)
            progress.advance(task)
    return hashes


def find_pairs(hashes: Sequence[int | None], max_distance: int) -> list[tuple[int, int, int]]:
    """(i, j, distance) for every pair of hashes at most `max_distance` bits apart, i < j."""
    present = np.array([i for i, h in enumerate(hashes) if h is not None], dtype=np.int64)
    if len(present) < 2:
        return []
    values = np.array([hashes[i] for i in present], dtype=np.uint64)
    found: dict[tuple[int, int], int] = {}
    for shift, width in _bands(max_distance):
        keys = (values >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        boundaries = np.flatnonzero(np.diff(keys[order])) + 1
        for members in np.split(order, boundaries):
            if len(members) < 2:
                continue
            first, second = np.triu_indices(len(members), k=1)
            a, b = members[first], members[second]
            distance = np.bitwise_count(values[a] ^ values[b])
            close = distance <= max_distance
            for i, j, d in zip(
                a[close].tolist(), b[close].tolist(), distance[close].tolist(), strict=True
            ):
                found[(min(i, j), max(i, j))] = int(d)
    return sorted((int(present[i]), int(present[j]), d) for (i, j), d in found.items())


def _bands(max_distance: int) -> list[tuple[int, int]]:
    count = max_distance + 1
    base, extra = divmod(64, count)
    bands, shift = [], 0
    for index in range(count):
        width = base + (1 if index < extra else 0)
        bands.append((shift, width))
        shift += width
    return bands


def near_duplicates(
    records: Sequence[PhotoRecord],
    max_distance: int = DEFAULT_MAX_DISTANCE,
    workers: int = 4,
    show_progress: bool = True,
) -> list[NearDuplicate]:
    """Pairs of photos of *different* items that look like the same photo."""
    hashes = hash_photos(records, workers, show_progress)
    found = []
    for i, j, distance in find_pairs(hashes, max_distance):
        if records[i].item_id != records[j].item_id:
            found.append(NearDuplicate(records[i], records[j], distance))
    return found
