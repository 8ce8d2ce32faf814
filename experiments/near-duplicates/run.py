"""How far apart are perceptual hashes of copies of one photo, and of different photos?

    .venv/bin/python experiments/near-duplicates/run.py MANIFEST [--photos 300]

Sets the default threshold of `touchstone data split` (near_duplicates.DEFAULT_MAX_DISTANCE):
copies must fall under it, distinct photos above it.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from touchstone.data.manifest import load_manifest
from touchstone.data.near_duplicates import hash_photos
from touchstone.imaging import decode_photo


def _hash(image: Image.Image) -> int:
    import imagehash

    bits = imagehash.phash(image).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def _variants(image: Image.Image) -> dict[str, Image.Image]:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=50)
    width, height = image.size
    margin = max(1, round(0.035 * width))
    return {
        "re-encoded JPEG q50": Image.open(io.BytesIO(buffer.getvalue())),
        "resized to 70%": image.resize((int(width * 0.7), int(height * 0.7))),
        "3.5% cropped off each side": image.crop((margin, margin, width - margin, height - margin)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--photos", type=int, default=300, help="photos to make copies of")
    args = parser.parse_args()
    records = load_manifest(args.manifest).records
    console = Console()

    copies: dict[str, list[int]] = {}
    for record in records[: args.photos]:
        image = decode_photo(record.path)
        original = _hash(image)
        for name, variant in _variants(image).items():
            copies.setdefault(name, []).append(bin(original ^ _hash(variant)).count("1"))
    table = Table(title=f"copies of {min(args.photos, len(records))} photos: bits apart")
    for column in ("copy", "median", "99th percentile", "max"):
        table.add_column(column, justify="right")
    for name, distances in copies.items():
        d = np.array(distances)
        table.add_row(name, f"{np.median(d):.0f}", f"{np.percentile(d, 99):.0f}", str(d.max()))
    console.print(table)

    hashes = np.array(hash_photos(records), dtype=np.uint64)
    items = np.array([r.item_id for r in records])
    counts = np.zeros(65, np.int64)
    for start in range(0, len(records), 512):
        block = np.bitwise_count(hashes[start : start + 512, None] ^ hashes[None, :])
        upper = (
            np.arange(start, min(start + 512, len(records)))[:, None]
            < np.arange(len(records))[None, :]
        )
        other_item = items[start : start + 512, None] != items[None, :]
        counts += np.bincount(block[upper & other_item].ravel(), minlength=65)
    total = counts.sum()
    table = Table(title=f"{total:,} pairs of photos of different items")
    for column in ("at most bits apart", "pairs", "share"):
        table.add_column(column, justify="right")
    cumulative = np.cumsum(counts)
    for limit in (2, 4, 5, 6, 8, 10, 16):
        table.add_row(str(limit), f"{cumulative[limit]:,}", f"{cumulative[limit] / total:.2e}")
    console.print(table)


if __name__ == "__main__":
    main()
