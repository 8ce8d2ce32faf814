"""Does `touchstone train` keep up with a bare timm training loop?

    .venv/bin/python benchmarks/train_throughput.py [--steps 30] [--repeats 3] [--config ...]

Same model, batch, data and data loader (decoding and augmentation in worker processes) for
both; the bare loop is what a person would write: forward, loss, backward, AdamW step. The
trainer adds EMA, the LR schedule, per-region loss weighting, progress and metrics. Each side
runs three times, interleaved (A B A B A B), each in a fresh process so neither inherits the
other's threads or memory, and the ratio of the medians is printed. Target: >= 0.9.

    .venv/bin/python benchmarks/train_throughput.py --phone 64 [--epochs 1]

Phone mode: 12-megapixel phone photos (4032x3024 JPEG with EXIF, `touchstone.data.synth.phone`)
through the training data path, with the decode cache off (every photo decoded every epoch) and
on (decoded once, before the first epoch): images per second of an epoch for the data loader
alone and for the loader with the config's model steps, the time the cache takes to fill, and
the ratios. One process, the config's batch and workers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from touchstone.data.manifest import load_manifest
from touchstone.data.synth import SynthConfig, generate_dataset
from training.config import TrainConfig, load_config
from training.data import RegionPhotos, fill_decode_cache, train_loader
from training.loop import train
from training.models import create_model
from training.run_setup import split_records


def touchstone_rate(config_path: Path, manifest: Path, steps: int, out: Path) -> float:
    config = load_config(
        config_path,
        [
            "optim.epochs=1",
            f"optim.max_steps_per_epoch={steps}",
            "tracking.enabled=false",
            "optim.patience=null",
        ],
    )
    result = train(config, manifest, out, console=Console(quiet=True))
    return result.history[0]["images_per_second"]


def bare_rate(config_path: Path, manifest_path: Path, steps: int) -> float:
    config = load_config(config_path)
    torch.manual_seed(config.seed)
    manifest = load_manifest(manifest_path)
    records = split_records(manifest, config)["train"]
    built = create_model(config.model, config.data, manifest.info.regions)
    model = built.net.to(memory_format=torch.channels_last)
    dataset = RegionPhotos(
        records, manifest.info.regions, built.preprocessing, config.data.augment, seed=config.seed
    )
    loader, _ = train_loader(dataset, config.data, config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
    )
    model.train()
    return _epoch(itertools.islice(loader, steps), model, optimizer)


def phone_photos(folder: Path, count: int) -> Path:
    """`count` 12 MP phone photos of synthetic regions (a manifest), labels and regions kept."""
    import dataclasses

    import numpy as np

    from touchstone.data.manifest import write_manifest
    from touchstone.data.synth.phone import phone_photo, pick_orientation
    from touchstone.imaging import decode_photo

    small = load_manifest(
        generate_dataset(
            folder / "regions",
            SynthConfig(items=-(-count // 3), seed=5),
            show_progress=False,
            workers=1,
        )
    )
    rng = np.random.default_rng(5)
    records = []
    for number, record in enumerate(small.records[:count]):
        region = np.asarray(decode_photo(record.path))
        path = folder / "phone" / f"{number:04d}-{record.path.stem}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(phone_photo(region, rng, orientation=pick_orientation(rng)))
        records.append(dataclasses.replace(record, path=path, image=path.name, bbox=None))
    return write_manifest(folder / "phone" / "manifest.csv", records, small.info)


def _epoch(loader, model=None, optimizer=None) -> float:  # type: ignore[no-untyped-def]
    """Images per second of one pass over the loader (or any iterable of its batches), with a
    training step per batch if a model is given."""
    seen = 0
    start = time.perf_counter()
    for batch in loader:
        if model is not None:
            images = batch.images.contiguous(memory_format=torch.channels_last)
            logits = model(images).gather(1, batch.regions[:, None]).squeeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seen += len(batch.labels)
    return seen / (time.perf_counter() - start)


def phone_rates(config: TrainConfig, manifest_path: Path, epochs: int) -> dict[str, float]:
    torch.manual_seed(config.seed)
    manifest = load_manifest(manifest_path)
    built = create_model(config.model, config.data, manifest.info.regions)
    model = built.net.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr)
    rates: dict[str, float] = {}
    for cached in (False, True):
        dataset = RegionPhotos(
            manifest.records,
            manifest.info.regions,
            built.preprocessing,
            config.data.augment,
            seed=config.seed,
        )
        name = "cache" if cached else "no cache"
        if cached:
            start = time.perf_counter()
            fill_decode_cache([dataset], config.data, show_progress=False)
            rates["cache fill s"] = time.perf_counter() - start
        loader, _ = train_loader(dataset, config.data, config.seed)
        rates[f"loader, {name}"] = statistics.mean(_epoch(loader) for _ in range(epochs))
        rates[f"loader + steps, {name}"] = statistics.mean(
            _epoch(loader, model, optimizer) for _ in range(epochs)
        )
    return rates


def phone_main(config_path: Path, count: int, epochs: int) -> None:
    config = load_config(config_path)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        manifest = phone_photos(Path(folder), count)
        made = time.perf_counter() - start
        size = sum(r.path.stat().st_size for r in load_manifest(manifest).records) / count
        rates = phone_rates(config, manifest, epochs)
    console = Console()
    console.print(
        f"{count} phone photos 4032x3024 JPEG (mean {size / 1e6:.1f} MB, made in {made:.0f} s); "
        f"{config.model.arch} at {config.model.img_size} px, batch {config.data.batch_size}, "
        f"{config.data.workers} loader workers, {torch.get_num_threads()} threads, "
        f"{epochs} epoch(s) each"
    )
    table = Table(title="training on 12 MP phone photos: images/s of an epoch")
    for column in ("what", "no cache", "cache", "ratio"):
        table.add_column(column, justify="right")
    for what in ("loader", "loader + steps"):
        off, on = rates[f"{what}, no cache"], rates[f"{what}, cache"]
        table.add_row(what, f"{off:.1f}", f"{on:.1f}", f"{on / off:.2f}")
    console.print(table)
    fill = rates["cache fill s"]
    console.print(f"cache fill, once per run: {fill:.1f} s ({count / fill:.1f} photos/s)")


def measure(side: str, config: Path, manifest: Path, steps: int, out: Path) -> float:
    """Run one side in a fresh Python process and return its images per second."""
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            "--side",
            side,
            "--config",
            str(config),
            "--data",
            str(manifest),
            "--steps",
            str(steps),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(result.stdout.strip().splitlines()[-1])["images_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/cpu-small.yaml"))
    parser.add_argument("--data", type=Path, help="manifest; default: 120 synthetic items")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phone", type=int, metavar="PHOTOS", help="phone-photo mode")
    parser.add_argument("--epochs", type=int, default=1, help="phone mode: epochs per side")
    parser.add_argument("--side", choices=["touchstone", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phone:
        phone_main(args.config, args.phone, args.epochs)
        return
    if args.side == "touchstone":
        print(
            json.dumps(
                {"images_per_second": touchstone_rate(args.config, args.data, args.steps, args.out)}
            )
        )
        return
    if args.side == "bare":
        print(json.dumps({"images_per_second": bare_rate(args.config, args.data, args.steps)}))
        return
    with tempfile.TemporaryDirectory() as folder:
        manifest = args.data or generate_dataset(
            Path(folder) / "data", SynthConfig(items=120, seed=5), show_progress=False
        )
        ours, bare = [], []
        for repeat in range(args.repeats):
            ours.append(
                measure(
                    "touchstone", args.config, manifest, args.steps, Path(folder) / f"run{repeat}"
                )
            )
            bare.append(measure("bare", args.config, manifest, args.steps, Path(folder) / "unused"))
    config = load_config(args.config)
    table = Table(
        title=f"training throughput: {config.model.arch} at {config.model.img_size} "
        f"px, batch {config.data.batch_size}, {args.steps} steps, "
        f"{torch.get_num_threads()} threads"
    )
    for column in ("loop", "images/s (runs)", "median"):
        table.add_column(column, justify="right")
    table.add_row(
        "touchstone train", ", ".join(f"{r:.1f}" for r in ours), f"{statistics.median(ours):.1f}"
    )
    table.add_row(
        "bare timm loop", ", ".join(f"{r:.1f}" for r in bare), f"{statistics.median(bare):.1f}"
    )
    console = Console()
    console.print(table)
    console.print(
        f"ratio touchstone / bare: "
        f"{statistics.median(ours) / statistics.median(bare):.2f} (target >= 0.9)"
    )


if __name__ == "__main__":
    main()
