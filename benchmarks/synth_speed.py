"""How fast does `touchstone data synth` make region crops?

    .venv/bin/python benchmarks/synth_speed.py [--items 300] [--size 224]

Target (issue 2): at least 200 crops of 224 px a second on one core. Measured in one run:
1. the generator itself on one core: render, photograph and JPEG-encode in memory, OpenCV held
   to one thread (this is the target's measure);
2. the whole command with files written, one worker process and then every core (creating
   files costs about 0.5 ms each on this machine's disk, which no generator can win back).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import cv2
from rich.console import Console
from rich.table import Table

from touchstone.data.manifest import load_manifest
from touchstone.data.synth import SynthConfig, generate_dataset
from touchstone.data.synth.camera import canvas_side
from touchstone.data.synth.generate import _labels, render_item
from touchstone.data.synth.materials import TextureBank

TARGET_PER_CORE = 200.0


def in_memory(config: SynthConfig) -> tuple[int, float]:
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        bank = TextureBank(config.seed, canvas_side(config.size))
        labels = _labels(config)
        start = time.perf_counter()
        crops = sum(len(render_item(config, i, labels[i], bank)[1]) for i in range(config.items))
        return crops, time.perf_counter() - start
    finally:
        cv2.setNumThreads(threads)


def with_files(config: SynthConfig, workers: int) -> tuple[int, float]:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        manifest = generate_dataset(folder, config, workers=workers, show_progress=False)
        elapsed = time.perf_counter() - start
        return len(load_manifest(manifest).records), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    config = SynthConfig(items=args.items, seed=11, size=args.size)
    cores = os.cpu_count() or 1
    table = Table(title=f"synthetic crops: {args.items} items at {args.size} px")
    for column in ("what", "cores", "crops", "seconds", "crops/s", "per core", "vs 200/core"):
        table.add_column(column, justify="right")
    runs = [("in memory", 1, *in_memory(config))]
    for workers in sorted({1, cores}):
        runs.append(("files written", workers, *with_files(config, workers)))
    for what, workers, crops, seconds in runs:
        rate = crops / seconds
        table.add_row(
            what,
            str(workers),
            str(crops),
            f"{seconds:.2f}",
            f"{rate:.0f}",
            f"{rate / workers:.0f}",
            f"{rate / workers / TARGET_PER_CORE:.2f}x",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
