"""Serving throughput: the HTTP service against the ONNX Runtime floor it stands on, one run.

    .venv/bin/python benchmarks/serve.py [--model experiments/demo/model] \
        [--run experiments/demo/run] [--seconds 20] [--quick]

On the same model and the same photos (the test split of the data named in the model's card,
items of 3 to 6 photos that pass the service's photo-quality checks, so that every photo
uploaded is scored), it measures:

1. ONNX Runtime in process: `OnnxModel.predict` on batches of the service's max batch size
   (16) and of 1, preprocessed photos. The floor: the service cannot beat it.
2. The in-process pipeline: the realistic ceiling for any service on this machine. Each photo
   gets the work every upload must get, with no HTTP, no SQLite and no asyncio: decode
   (`decode_photo`), the quality checks (`assess_photo`, default policy), `PhotoStore.put` of
   the decoded image into a temporary store (re-encode without metadata, sha256, write, fsync;
   a fresh store for each pass over the photos, so every put writes and syncs, as for a new
   upload) and `to_model_input`, on a pool of 2 threads; the main thread runs ONNX Runtime on
   batches of 16 of those as they are ready, in the session the server uses (`spin=False`),
   while the pool prepares the next batch, so preparation overlaps inference as in the
   server. Whatever separates the service from this row is the cost of serving itself.
3. The service: a real `touchstone serve` subprocess (its own temporary data dir, SQLite) with
   batching on and with `--no-batching`; client threads (one httpx.Client each) post whole
   items (multipart, photo parts named by region, an `app` key) for `--seconds`, at
   concurrency 1, 8 and 32. Photos/s counts photos scored in 201 answers; latency is per
   request, seen by the client.
4. torch eager (the run's best checkpoint, channels_last) for reference, batch 16 and 1.

Then it prints each row and the ratios: service photos/s over raw ONNX Runtime batch-16
photos/s (target: at least 0.85 at saturation: 32 clients, batching on), the pipeline over raw
ONNX Runtime, the service at saturation over the pipeline, and batching on over off at each
concurrency. Also one reference row: decoding and preprocessing on one thread, part of the
work the service does for every photo and the floor does not.

Threads: ONNX Runtime gets every core this process may use everywhere (the service's default,
`default_threads()`; the subprocess inherits this process's CPU affinity), and torch the same
number, so the engines are compared on equal terms. The raw row's session spins (the default,
best for inference alone); the pipeline's and the server's do not, so that idle ONNX Runtime
threads leave the cores to the per-photo work. The rows run one after another, never two at
once.

The ratio is pessimistic for the service: the client threads (multipart encoding, JSON
parsing) run on the same cores as the server (on this machine, 2), though they take little
(about 0.1 core at 32 clients, measured once); and the server also decodes, stores, checks and
preprocesses every photo and commits each appraisal to SQLite, where the floor only runs the
network. The pipeline row takes that per-photo work into account, and is if anything a little
strict: it writes and fsyncs every photo, where the service here writes each distinct photo
once (the items repeat; a photo already stored is read back and hashed instead, about 0.4 ms
against 1.5 to 2.5 ms for a write on this machine, measured once). Nothing else heavy should
run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from serving.photos import PhotoStore
from serving.policy.config import load_policy
from serving.policy.photo_quality import assess_photo
from serving.settings import Settings
from touchstone.data.manifest import load_manifest
from touchstone.imaging import decode_photo, to_model_input
from touchstone.inference import OnnxModel, default_threads

TOUCHSTONE = str(Path(sys.executable).parent / "touchstone")
ENV = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
}
CONCURRENCY = (1, 8, 32)
FORM = {"category": "bag"}  # members never announced: explorers
TARGET = 0.85
PREP_WORKERS = 2  # the pipeline's threads for the per-photo work
WARM_BATCHES = 3

Part = tuple[str, tuple[str, bytes, str]]  # multipart: (region, (filename, bytes, type))


@dataclass
class Item:
    parts: list[Part]
    images: list[Image.Image]  # decoded, for the in-process rows


@dataclass
class Row:
    engine: str
    setting: str
    photos_per_s: float
    requests_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    not_201: int | None = None
    overloaded: int | None = None  # 503s, also counted in not_201


def choose_items(model: OnnxModel, count: int) -> list[Item]:
    """Test items of 3 to 6 photos whose photos all pass the service's quality checks."""
    manifest_path = model.card.data.get("manifest")
    if not manifest_path:
        raise SystemExit("the model card names no data manifest")
    records = load_manifest(manifest_path).records
    test = [r for r in records if r.split == "test"] or records
    by_item = defaultdict(list)
    for record in test:
        by_item[record.item_id].append(record)
    policy = Settings().policy_config
    items = []
    for photos in by_item.values():
        if not 3 <= len(photos) <= 6 or any(r.region not in model.region_index for r in photos):
            continue
        images = [decode_photo(r.path) for r in photos]
        # An unusable photo is sent back without scoring: keep photos scored = photos uploaded.
        if not all(assess_photo(image, policy).usable for image in images):
            continue
        parts = [(r.region, (r.path.name, r.path.read_bytes(), "image/jpeg")) for r in photos]
        items.append(Item(parts, images))
        if len(items) == count:
            break
    if not items:
        raise SystemExit(f"{manifest_path}: no test item of 3 to 6 usable photos")
    return items


def time_calls(
    call: Callable[[Any], object], batches: Sequence[Sized], seconds: float
) -> tuple[float, float]:
    """Call `call` on the batches in turn for `seconds`: photos/s and median ms per call."""
    for batch in batches[:3]:  # warm-up: allocations, kernel choice
        call(batch)
    times, photos = [], 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        batch = batches[len(times) % len(batches)]
        began = time.perf_counter()
        call(batch)
        times.append(time.perf_counter() - began)
        photos += len(batch)
    return photos / (time.perf_counter() - start), statistics.median(times) * 1000


def in_process_rows(
    engine: str,
    call: Callable[[np.ndarray], object],
    pixels: list[np.ndarray],
    batch: int,
    seconds: float,
) -> list[Row]:
    rows = []
    for size in (batch, 1):
        batches = [np.stack(pixels[i : i + size]) for i in range(0, len(pixels) - size + 1, size)]
        rate, median_ms = time_calls(call, batches, seconds)
        rows.append(Row(engine, f"batch {size}", rate, p50_ms=median_ms))
    return rows


def pipeline_row(model_dir: Path, items: list[Item], batch: int, seconds: float) -> Row:
    """The in-process pipeline (see the module docstring): photos/s, batches of `batch`."""
    model = OnnxModel(model_dir, spin=False)  # the server's session
    prep = model.preprocessing
    policy = load_policy(None)
    datas = [part[1][1] for item in items for part in item.parts]
    folder = Path(tempfile.mkdtemp(prefix="touchstone-bench-pipeline-"))
    stores: dict[int, PhotoStore] = {}

    def store_for(n: int) -> PhotoStore:
        # A fresh store for each pass over the photos: every put writes and syncs its photo.
        lap = n // len(datas)
        if lap not in stores:
            stores[lap] = PhotoStore(folder / str(lap))
        return stores[lap]

    def one(data: bytes, store: PhotoStore) -> np.ndarray:
        image = decode_photo(data)
        assess_photo(image, policy)
        store.put(data, image)
        return to_model_input(image, prep)

    try:
        with ThreadPoolExecutor(PREP_WORKERS, thread_name_prefix="prepare") as pool:
            pending: deque[Future[np.ndarray]] = deque()
            submitted = 0

            def fill() -> None:
                # Two batches ahead at most: the next one is prepared while this one runs.
                nonlocal submitted
                while len(pending) < 2 * batch:
                    data = datas[submitted % len(datas)]
                    pending.append(pool.submit(one, data, store_for(submitted)))
                    submitted += 1

            done, photos, start = 0, 0, 0.0
            try:
                while True:
                    fill()
                    pixels = [pending.popleft().result() for _ in range(batch)]
                    fill()
                    model.predict(np.stack(pixels))
                    done += 1
                    if done == WARM_BATCHES:  # warm: allocations, kernel choice, the pool
                        start = time.perf_counter()
                    elif done > WARM_BATCHES:
                        photos += batch
                        if time.perf_counter() - start >= seconds and done - WARM_BATCHES >= 3:
                            break
                elapsed = time.perf_counter() - start
            finally:
                for future in pending:
                    future.cancel()
        setting = f"batch {batch}, {PREP_WORKERS} workers"
        return Row("in-process pipeline", setting, photos / elapsed)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`touchstone serve` in a subprocess, with its own data dir, and an `app` key."""

    def __init__(self, model: Path, batching: bool, max_batch: int, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = folder / "data"
        self.log_path = folder / "server.log"
        args = [TOUCHSTONE, "serve", "--model", str(model), "--port", str(self.port)]
        args += ["--data-dir", str(self.data_dir), "--max-batch", str(max_batch)]
        args += [] if batching else ["--no-batching"]
        env = {**os.environ, **ENV}
        env.pop("TOUCHSTONE_DATABASE_URL", None)  # SQLite in the data dir
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.key = ""

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"the server was not ready in {timeout:.0f} s:\n{self.log()}")
        # The database is migrated by now; the key goes straight into it, as the tests do.
        from serving.auth import create_key
        from serving.db import default_database_url, make_engine, make_sessionmaker

        engine = make_engine(default_database_url(self.data_dir))
        with make_sessionmaker(engine)() as session:
            self.key = create_key(session, "member_backend", "benchmark")
        engine.dispose()

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


# Seconds, status (0: no answer), photos uploaded and scored, error text.
Result = tuple[float, int, int, int, str]


def post_for(
    service: Service, items: list[Item], concurrency: int, seconds: float
) -> tuple[list[Result], float]:
    """Client threads post items until `seconds` have passed: each request's result, and the
    wall time until the last answer."""
    start = time.perf_counter()
    deadline = start + seconds

    def client(worker: int) -> list[Result]:
        results: list[Result] = []
        headers = {"Authorization": f"Bearer {service.key}"}
        form = {**FORM, "member_id": f"bench-{worker}"}
        with httpx.Client(base_url=service.url, headers=headers, timeout=120) as http:
            n = worker
            while time.perf_counter() < deadline:
                item = items[n % len(items)]
                n += concurrency
                began = time.perf_counter()
                try:
                    answer = http.post("/v1/appraisals", data=form, files=item.parts)
                except httpx.HTTPError as exc:
                    results.append((time.perf_counter() - began, 0, 0, 0, repr(exc)))
                    continue
                elapsed = time.perf_counter() - began
                if answer.status_code == 201:
                    findings = answer.json()["findings"]
                    scored = sum(f["log_odds"] is not None for f in findings)
                    results.append((elapsed, 201, len(item.parts), scored, ""))
                else:
                    text = answer.text[:300]
                    results.append((elapsed, answer.status_code, 0, 0, text))
        return results

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        per_thread = list(pool.map(client, range(concurrency)))
    return [r for results in per_thread for r in results], time.perf_counter() - start


def clients(concurrency: int) -> str:
    return f"{concurrency} client{'s' if concurrency > 1 else ''}"


def measure_service(
    service: Service, engine: str, items: list[Item], concurrency: int, seconds: float
) -> Row:
    results, elapsed = post_for(service, items, concurrency, seconds)
    latencies = np.array([r[0] for r in results]) * 1000
    failed = [r for r in results if r[1] != 201]
    if failed:
        print(f"  {len(failed)} not 201; first: {failed[0][1]} {failed[0][4]}")
    uploaded, scored = sum(r[2] for r in results), sum(r[3] for r in results)
    if scored != uploaded:
        print(f"  only {scored} of the {uploaded} photos uploaded were scored")
    return Row(
        engine,
        clients(concurrency),
        scored / elapsed,
        (len(results) - len(failed)) / elapsed,
        float(np.percentile(latencies, 50)),
        float(np.percentile(latencies, 99)),
        len(failed),
        sum(r[1] == 503 for r in failed),
    )


def service_rows(
    model: Path, batching: bool, args: argparse.Namespace, items: list[Item], console: Console
) -> list[Row]:
    folder = Path(tempfile.mkdtemp(prefix="touchstone-bench-"))
    service = Service(model, batching, args.batch, folder)
    try:
        service.wait_ready()
        # Warm before timing: connections, the first batches, SQLite's first writes.
        warm, _ = post_for(service, items, 8, min(2.0, args.seconds))
        if not any(r[1] == 201 for r in warm):
            raise RuntimeError(f"no 201 while warming: {warm[0][1]} {warm[0][4]}")
        rows = []
        engine = "service" if batching else "service, no batching"
        for concurrency in CONCURRENCY:
            console.print(f"timing {engine}, {clients(concurrency)}")
            rows.append(measure_service(service, engine, items, concurrency, args.seconds))
        return rows
    except BaseException:
        console.print(f"[red]server log (tail):[/]\n{service.log()}")
        raise
    finally:
        service.stop()
        shutil.rmtree(folder, ignore_errors=True)


def torch_rows(
    run_dir: Path, items: list[Item], args: argparse.Namespace, threads: int
) -> tuple[list[Row] | None, str]:
    """torch eager, channels_last, on the run's best checkpoint; None when it cannot run."""
    if not run_dir.is_dir():
        return None, f"no run dir {run_dir}: torch skipped"
    try:
        import torch

        from training.export import ExportError, load_trained
    except ImportError as exc:
        return None, f"torch is not installed ({exc}): torch skipped"
    try:
        trained = load_trained(run_dir)
    except ExportError as exc:
        return None, f"{exc}: torch skipped"
    torch.set_num_threads(threads)
    net = trained.net.eval().to(memory_format=torch.channels_last)
    images = [image for item in items for image in item.images][: 4 * args.batch]
    pixels = [to_model_input(image, trained.preprocessing) for image in images]

    @torch.no_grad()
    def forward(batch: np.ndarray) -> None:
        net(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last))

    return in_process_rows("torch eager", forward, pixels, args.batch, args.seconds), ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("experiments/demo/model"))
    parser.add_argument("--run", type=Path, default=Path("experiments/demo/run"))
    parser.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 s each")
    parser.add_argument("--batch", type=int, default=16, help="the service's --max-batch")
    parser.add_argument("--items", type=int, default=200, help="distinct items to post")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 2.0
    os.environ.update(ENV)  # for torch's side (training imports albumentations and mlflow)
    console = Console()
    if not console.is_terminal:  # piped or logged: rich would squeeze the table into 80 columns
        console = Console(width=120)
    if not (args.model / "model.json").exists():
        raise SystemExit(f"{args.model}: no model.json; `make demo` exports one there")
    threads = default_threads()

    model = OnnxModel(args.model, threads)
    console.print("choosing items and decoding their photos")
    items = choose_items(model, args.items)
    images = [image for item in items for image in item.images]
    photos = sum(len(item.parts) for item in items)
    pixels = [model.prepare(image) for image in images[: 4 * args.batch]]

    console.print("timing ONNX Runtime in process")
    rows = in_process_rows("ONNX Runtime", model.predict, pixels, args.batch, args.seconds)
    floor = rows[0].photos_per_s
    prep = model.preprocessing
    del model  # its thread pool must not sit beside the server's

    # The service's own work per photo, outside the network: decode and preprocess.
    datas = [part[1][1] for item in items for part in item.parts][:200]
    rate, median_ms = time_calls(
        lambda batch: [to_model_input(decode_photo(d), prep) for d in batch],
        [[d] for d in datas],
        min(args.seconds, 5.0),
    )
    rows.append(Row("decode + preprocess", "1 thread", rate, p50_ms=median_ms))

    console.print("timing the in-process pipeline")
    pipeline = pipeline_row(args.model, items, args.batch, args.seconds)
    rows.append(pipeline)

    for batching in (True, False):
        rows += service_rows(args.model, batching, args, items, console)

    console.print("timing torch eager")
    torch_result, skipped = torch_rows(args.run, items, args, threads)
    if torch_result is None:
        console.print(f"[yellow]{skipped}[/]")
    else:
        rows += torch_result

    card = json.loads((args.model / "model.json").read_text())
    table = Table(
        title=f"{card['architecture']} at {card['preprocessing']['input_size']} px, "
        f"{threads} ONNX Runtime / torch threads, {args.seconds:g} s each, "
        f"{len(items)} items ({photos} photos, {photos / len(items):.1f} per item)"
    )
    columns = ("engine", "setting", "photos/s", "requests/s", "p50 ms", "p99 ms")
    for column in (*columns, "not 201 (503)", "x ONNX RT"):
        table.add_column(column, justify="right")

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.1f}"

    for row in rows:
        errors = "" if row.not_201 is None else f"{row.not_201} ({row.overloaded})"
        table.add_row(
            row.engine,
            row.setting,
            number(row.photos_per_s),
            number(row.requests_per_s),
            number(row.p50_ms),
            number(row.p99_ms),
            errors,
            f"{row.photos_per_s / floor:.2f}",
        )
    console.print(table)
    console.print("in-process rows: p50 ms is the median time of one call (batch or photo)")

    on = {r.setting: r for r in rows if r.engine == "service"}
    off = {r.setting: r for r in rows if r.engine == "service, no batching"}
    # Saturation: the most clients, batching on (the service's default).
    top = on[clients(max(CONCURRENCY))]
    ratio = top.photos_per_s / floor
    verdict = "[green]met[/]" if ratio >= TARGET else "[red]missed[/]"
    console.print(
        f"service at saturation ({top.setting}, batching): {top.photos_per_s:.1f} photos/s = "
        f"{ratio:.2f} x ONNX Runtime batch {args.batch} ({floor:.1f}); target {TARGET}: {verdict}"
    )
    console.print(
        f"in-process pipeline: {pipeline.photos_per_s:.1f} photos/s = "
        f"{pipeline.photos_per_s / floor:.2f} x ONNX Runtime batch {args.batch}; service at "
        f"saturation / pipeline: {top.photos_per_s / pipeline.photos_per_s:.2f}"
    )
    best = max(on.values(), key=lambda r: r.photos_per_s)
    if best is not top:
        console.print(
            f"best batching row: {best.setting}, {best.photos_per_s:.1f} photos/s = "
            f"{best.photos_per_s / floor:.2f} x ONNX Runtime"
        )
    console.print(
        "batching on / off, photos/s: "
        + ", ".join(
            f"{setting} {on[setting].photos_per_s / off[setting].photos_per_s:.2f}"
            for setting in on
            if off.get(setting) and off[setting].photos_per_s > 0
        )
    )


if __name__ == "__main__":
    main()
