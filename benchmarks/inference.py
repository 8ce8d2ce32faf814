"""Inference speed: torch eager against ONNX Runtime fp32 and int8, batch 1 and 16, one run.

    .venv/bin/python benchmarks/inference.py [--run experiments/demo/run] [--repeats 30]

Exports the run's best weights to ONNX (fp32, and int8 calibrated on 64 of its training photos)
in a temporary folder, then times each engine on the same real photos with the same number of
threads (all cores this process may use). Prints images/s and latency (median and 90th
percentile per batch) and each engine's speed as a ratio of torch eager.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from touchstone.data.manifest import load_manifest
from touchstone.evaluation.scoring import prepare_photo
from touchstone.inference import default_threads, open_session
from training.onnx_export import INPUT_NAME, export_onnx, load_trained
from training.quantization import calibration_sample, quantize_int8


def timed(run, batch: np.ndarray, repeats: int) -> list[float]:
    for _ in range(3):  # warm-up: allocations, kernel choice
        run(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("experiments/demo/run"))
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    console = Console()
    threads = default_threads()
    torch.set_num_threads(threads)

    trained = load_trained(args.run)
    manifest = load_manifest(trained.payload["manifest_path"])
    train = [r for r in manifest.records if r.split == "train"] or manifest.records
    photos = [prepare_photo(r, trained.preprocessing) for r in train[:16]]
    batches = {1: np.stack(photos[:1]), 16: np.stack(photos[:16])}

    net = trained.net.eval()
    net_cl = net.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def torch_eager(batch: np.ndarray) -> None:
        net_cl(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last))

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(net, trained.preprocessing.input_size, fp32)
        sample = calibration_sample(train, 64, 0)
        quantize_int8(fp32, int8, sample, trained.preprocessing)
        engines = {"torch eager (channels_last)": torch_eager}
        for name, path in (("ONNX Runtime fp32", fp32), ("ONNX Runtime int8", int8)):
            session = open_session(path, threads)
            engines[name] = lambda b, s=session: s.run(None, {INPUT_NAME: b})
        results: dict[tuple[str, int], list[float]] = {}
        for name, run in engines.items():
            for size, batch in batches.items():
                console.print(f"timing {name}, batch {size}")
                results[name, size] = timed(run, batch, args.repeats)

    table = Table(
        title=f"{trained.payload['arch']} at {trained.preprocessing.input_size} px, "
        f"{threads} threads, {args.repeats} timed batches each"
    )
    for column in ("engine", "batch", "images/s", "median ms", "p90 ms", "x torch"):
        table.add_column(column, justify="right")
    for (name, size), times in results.items():
        median = statistics.median(times)
        p90 = sorted(times)[int(0.9 * (len(times) - 1))]
        base = statistics.median(results[next(iter(engines)), size])
        table.add_row(
            name,
            str(size),
            f"{size / median:.1f}",
            f"{median * 1000:.1f}",
            f"{p90 * 1000:.1f}",
            f"{base / median:.2f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
