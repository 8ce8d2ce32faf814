"""How fast are phone-like synthetic photos made, and how large are they?

    .venv/bin/python experiments/synthetic-baseline/phone_speed.py [--items 30] \
        [--frames 1008x756 2016x1512 4032x3024] [--heic-share 0.15] [--workers 2]

For each frame size: `generate_dataset` with files written on every worker, then photos a
second and the mean file size of the JPEG and the HEIC photos. The data card
(datasets/README.md) quotes the output. Outputs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from touchstone.data.manifest import load_manifest
from touchstone.data.synth import SynthConfig, generate_dataset


def measure(frame: tuple[int, int], items: int, heic_share: float, workers: int) -> list[str]:
    config = SynthConfig(
        items=items, seed=7, size=448, photo="phone", frame=frame, heic_share=heic_share
    )
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        manifest = generate_dataset(folder, config, workers=workers, show_progress=False)
        elapsed = time.perf_counter() - start
        paths = [record.path for record in load_manifest(manifest).records]
        sizes: dict[str, list[int]] = {".jpg": [], ".heic": []}
        for path in paths:
            sizes[Path(path).suffix].append(os.path.getsize(path))
    mean_mb = {k: (sum(v) / len(v) / 1e6 if v else 0.0) for k, v in sizes.items()}
    return [
        f"{frame[0]}x{frame[1]}",
        f"{len(paths)} ({len(sizes['.heic'])} HEIC)",
        f"{elapsed:.1f}",
        f"{len(paths) / elapsed:.1f}",
        f"{mean_mb['.jpg']:.2f}",
        f"{mean_mb['.heic']:.2f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--frames", nargs="+", default=["1008x756", "2016x1512", "4032x3024"])
    parser.add_argument("--heic-share", type=float, default=0.15)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    table = Table(
        title=f"phone photos: {args.items} items, {args.workers} workers, "
        f"HEIC share {args.heic_share}"
    )
    for column in ("frame", "photos", "seconds", "photos/s", "MB per JPEG", "MB per HEIC"):
        table.add_column(column)
    for text in args.frames:
        width, height = (int(v) for v in text.lower().split("x"))
        table.add_row(*measure((width, height), args.items, args.heic_share, args.workers))
    Console().print(table)


if __name__ == "__main__":
    main()
