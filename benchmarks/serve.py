"""Serving throughput: the HTTP service against the in-process floor it stands on, one run.

    .venv/bin/python benchmarks/serve.py [--photos square|phone] [--model experiments/demo/model]
        [--run experiments/demo/run] [--seconds 20] [--items N] [--quick] [--headline]

The photos (`--photos`):
- square (the default): the test split of the data named in the model's card, items of 3 to 6
  photos that pass the service's photo-quality checks, so that every photo uploaded is scored
  (the synthetic 224 px JPEGs); `--items` of them (200).
- phone: items of six 12-megapixel JPEGs as phones send them: `phone_photo`
  (`touchstone.data.synth.phone`) lays a test photo of the region on a table in a 4032x3024
  frame, with EXIF (make and model, time, GPS, a thumbnail, orientation 1 and 6 in turn); two
  photos of each of three regions an item, 2 to 5 MB each; `--items` of them (4; 2 with
  `--quick`), checked as the square ones.

Every upload is new to the store in both modes: before a photo is sent (or put, in the
pipeline), `unique_upload` adds the bits of a running count to 20 low-frequency steps of its
JPEG's first quantisation table, so its bytes and its full-size pixels differ slightly from
every other upload's while its size and decoding cost stay the same; no de-duplication helps.

On the same model and photos it measures:

1. The floor, in process: the least any service must do for a photo. `decode_for_model`
   (`decode_reduced` to the model's shorter side) and `to_model_input`, on a pool of 2
   threads, while the main thread runs ONNX Runtime on batches of 16 of them as they are
   ready, in the session the server uses (`spin=False`): preparation overlaps inference, as
   in the server.
2. The in-process pipeline: the same, with the work every upload must get, with no HTTP, no
   SQLite and no asyncio: the upload read (a copy of its bytes), its sha256, `PhotoStore.put`
   into a temporary store (metadata stripped losslessly, written, fsynced), `decode_reduced`,
   the quality checks (`assess_photo` on the reduced photo, judged at its full size) and
   `to_model_input`. Whatever separates the service from this row is the cost of serving.
3. The service: a real `touchstone serve` subprocess (its own temporary data dir, SQLite) with
   batching on and with `--no-batching`; client threads (one httpx.Client each) post whole
   items (multipart, photo parts named by region, a member back end's key, a new member each
   item: a member may submit 30 an hour) for `--seconds`, at concurrency 1, 8 and 32.
   Photos/s counts photos scored (usable) in 201 answers; p50 and p99 are per item answered
   (201), seen by the client. The server's peak RSS (VmHWM in
   /proc/<pid>/status) is read before the load and after each concurrency level: the peak so
   far.
4. For reference: raw ONNX Runtime on preprocessed photos (`OnnxModel.predict`, batches of 16
   and 1, the default spinning session), the floor's per-photo work on one thread, and torch
   eager (the run's best checkpoint, channels_last) at batch 16 and 1.

Targets, in both modes, printed with the measured ratios (and alone with `--headline`, with
the server's memory):
- the pipeline at 0.6 of the floor or more;
- the service at saturation (32 clients, batching on) at 0.85 of the pipeline or more;
- an item answered at p50, one client, within 3 times the floor's time for its photos (photos
  per item / floor photos/s; six in phone mode, the mean item in square mode).
The target before them, the service at 0.85 of raw ONNX Runtime, was wrong for CPU inference:
on 2 cores the work every upload needs besides inference already held the pipeline near 0.57
of raw ONNX Runtime (docs/benchmarks.md).

Threads: ONNX Runtime gets every core this process may use (the service's default,
`default_threads()`; the subprocess inherits this process's CPU affinity), and torch the same
number. The raw rows' session spins (best for inference alone); the floor's, the pipeline's
and the server's do not, so that idle ONNX Runtime threads leave the cores to the per-photo
work. The rows run one after another, never two at once.

The client threads (multipart encoding, JSON parsing) run on the same cores as the server (on
this machine, 2), though they take little (about 0.1 core at 32 clients with square photos,
measured once). Nothing else heavy should run meanwhile.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
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
from PIL import Image, ImageOps
from rich.console import Console
from rich.table import Table

from serving.photos import PhotoStore
from serving.policy.config import PolicyConfig, load_policy
from serving.policy.photo_quality import PhotoQuality, assess_photo
from touchstone.data.manifest import load_manifest
from touchstone.data.synth.phone import phone_photo
from touchstone.imaging import (
    DEFAULT_MAX_PIXELS,
    ReducedPhoto,
    decode_for_model,
    decode_photo,
)
from touchstone.inference import OnnxModel, default_threads
from touchstone.preprocessing import Preprocessing, to_model_input

TOUCHSTONE = str(Path(sys.executable).parent / "touchstone")
ENV = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
}
CONCURRENCY = (1, 8, 32)
FORM = {"category": "bag"}  # members never announced: explorers
PREP_WORKERS = 2  # the floor's and the pipeline's threads for the per-photo work
WARM_BATCHES = 3
# The targets (see the module docstring).
PIPELINE_OF_FLOOR = 0.6
SERVICE_OF_PIPELINE = 0.85
ITEM_P50_OF_FLOOR = 3.0
# Phone mode: photos an item, their frame, and which EXIF orientation each is stored with.
PHONE_PHOTOS = 6
PHONE_FRAME = (4032, 3024)
PHONE_ORIENTATIONS = (1, 6)  # landscape, then upright (stored turned), in turn
PHONE_TRIES = 20
# unique_upload: quantisation steps 1 to 20 (zigzag order, lowest AC frequencies first).
UNIQUE_BITS = 20

Part = tuple[str, tuple[str, bytes, str]]  # multipart: (region, (filename, bytes, type))


@dataclass
class Item:
    parts: list[Part]


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
    peak_rss_mib: float | None = None  # the server's VmHWM after this row
    # Cores busy during the row: this process's (the clients, or the in-process work), and
    # the server's. Clients and server share the machine's cores.
    cores: float | None = None
    server_cores: float | None = None


def photo_datas(items: list[Item]) -> list[bytes]:
    return [part[1][1] for item in items for part in item.parts]


def unique_upload(data: bytes, count: int) -> bytes:
    """`data` made into an upload no other `count` gives: the bits of `count` nudge the steps
    of the JPEG's first quantisation table at the 20 lowest AC frequencies by one, so the bytes
    and the full-size pixels change slightly, the size and the decoding cost do not (a 1/8 DCT
    decode reads the DC steps only: the model's input stays the same). Other formats as they
    are."""
    if not 0 <= count < 1 << UNIQUE_BITS:
        raise ValueError(f"count {count}: 0 to {(1 << UNIQUE_BITS) - 1}")
    if not data.startswith(b"\xff\xd8"):
        return data
    at = _quantisation_steps(data)
    steps = bytearray(data[at : at + 64])
    for bit in range(UNIQUE_BITS):
        if count >> bit & 1:
            step = steps[1 + bit]
            steps[1 + bit] = step + 1 if step < 255 else step - 1
    return data[:at] + bytes(steps) + data[at + 64 :]


def _quantisation_steps(jpeg: bytes) -> int:
    """Where the 64 steps of a JPEG's first 8-bit quantisation table start."""
    at = 2
    while at + 5 <= len(jpeg) and jpeg[at] == 0xFF:
        marker, length = jpeg[at + 1], int.from_bytes(jpeg[at + 2 : at + 4], "big")
        if marker == 0xDB and jpeg[at + 4] >> 4 == 0:  # DQT, 8-bit steps
            return at + 5
        if marker == 0xDA:  # the scan starts: no table before it
            break
        at += 2 + length
    raise ValueError("no 8-bit quantisation table before the JPEG's scan")


def judge(reduced: ReducedPhoto, policy: PolicyConfig) -> PhotoQuality:
    """The service's quality checks on a reduced decode, its size judged at full size."""
    return assess_photo(reduced.image, policy, full_size=(reduced.width, reduced.height))


def test_records(model: OnnxModel) -> list[Any]:
    manifest_path = model.card.data.get("manifest")
    if not manifest_path:
        raise SystemExit("the model card names no data manifest")
    records = load_manifest(manifest_path).records
    return [r for r in records if r.split == "test"] or records


def choose_items(model: OnnxModel, count: int) -> list[Item]:
    """Test items of 3 to 6 photos whose photos all pass the service's quality checks."""
    by_item = defaultdict(list)
    for record in test_records(model):
        by_item[record.item_id].append(record)
    policy = load_policy(None)
    items = []
    for photos in by_item.values():
        if not 3 <= len(photos) <= 6 or any(r.region not in model.region_index for r in photos):
            continue
        # An unusable photo is sent back without scoring: keep photos scored = photos uploaded.
        if not all(
            judge(decode_for_model(r.path, model.preprocessing), policy).usable for r in photos
        ):
            continue
        parts = [(r.region, (r.path.name, r.path.read_bytes(), "image/jpeg")) for r in photos]
        items.append(Item(parts))
        if len(items) == count:
            break
    if not items:
        raise SystemExit("no test item of 3 to 6 usable photos in the model's data")
    return items


def phone_items(model: OnnxModel, count: int, seed: int = 13) -> list[Item]:
    """`count` items of six phone photos, two of each of (up to) three of the model's regions,
    each of a test photo of its region. A region photo too soft to pass the sharpness check once
    enlarged to a phone frame is passed over for another (up to PHONE_TRIES)."""
    rng = np.random.default_rng(seed)
    by_region = defaultdict(list)
    for record in test_records(model):
        by_region[record.region].append(record)
    regions = [r for r in model.card.regions if by_region[r]][:3]
    if not regions:
        raise SystemExit("no test photo of any of the model's regions")
    policy = load_policy(None)

    def usable_photo(region: str, orientation: int) -> bytes:
        candidates = by_region[region]
        for index in rng.permutation(len(candidates))[:PHONE_TRIES]:
            photo = decode_photo(candidates[index].path)
            square = np.asarray(ImageOps.fit(photo, (min(photo.size),) * 2))
            # The sensor is landscape: a photo taken upright is stored turned, tagged 6.
            frame = PHONE_FRAME if orientation == 1 else PHONE_FRAME[::-1]
            data = phone_photo(square, rng, frame, "jpeg", orientation)
            if judge(decode_for_model(data, model.preprocessing), policy).usable:
                return data
        raise SystemExit(f"no usable phone photo of {region} in {PHONE_TRIES} tries")

    items = []
    for number in range(count):
        parts: list[Part] = []
        for k in range(PHONE_PHOTOS):
            region = regions[k % len(regions)]
            data = usable_photo(region, PHONE_ORIENTATIONS[k % len(PHONE_ORIENTATIONS)])
            parts.append((region, (f"IMG_{number:04d}_{k}.jpg", data, "image/jpeg")))
        items.append(Item(parts))
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
    pixels = [pixels[i % len(pixels)] for i in range(max(len(pixels), 4 * batch))]
    rows = []
    for size in (batch, 1):
        batches = [np.stack(pixels[i : i + size]) for i in range(0, len(pixels) - size + 1, size)]
        rate, median_ms = time_calls(call, batches, seconds)
        rows.append(Row(engine, f"batch {size}", rate, p50_ms=median_ms))
    return rows


def overlapped_rate(
    model_dir: Path,
    datas: list[bytes],
    prepare: Callable[[bytes, int], np.ndarray],
    batch: int,
    seconds: float,
) -> float:
    """Photos/s of `prepare(data, n)` (n: the photo's running count) on PREP_WORKERS threads,
    while this thread runs ONNX Runtime, in the server's session, on batches of `batch` of
    their results as they are ready: preparation overlaps inference, as in the server."""
    model = OnnxModel(model_dir, spin=False)
    with ThreadPoolExecutor(PREP_WORKERS, thread_name_prefix="prepare") as pool:
        pending: deque[Future[np.ndarray]] = deque()
        submitted = 0

        def fill() -> None:
            # Two batches ahead at most: the next one is prepared while this one runs.
            nonlocal submitted
            while len(pending) < 2 * batch:
                pending.append(pool.submit(prepare, datas[submitted % len(datas)], submitted))
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
            return photos / (time.perf_counter() - start)
        finally:
            for future in pending:
                future.cancel()


def floor_row(
    model_dir: Path, items: list[Item], prep: Preprocessing, args: argparse.Namespace
) -> Row:

    def prepare(data: bytes, _count: int) -> np.ndarray:
        return to_model_input(decode_for_model(data, prep).image, prep)

    cpu, wall = time.process_time(), time.perf_counter()
    rate = overlapped_rate(model_dir, photo_datas(items), prepare, args.batch, args.seconds)
    cores = (time.process_time() - cpu) / (time.perf_counter() - wall)
    return Row("floor", f"batch {args.batch}, {PREP_WORKERS} workers", rate, cores=cores)


def pipeline_row(
    model_dir: Path, items: list[Item], prep: Preprocessing, args: argparse.Namespace
) -> Row:
    """The in-process pipeline (see the module docstring): photos/s, batches of args.batch."""
    policy = load_policy(None)
    folder = Path(tempfile.mkdtemp(prefix="touchstone-bench-pipeline-"))
    store = PhotoStore(folder)
    puts = itertools.count()  # next(puts) once a put: afterwards, how many were put

    def prepare(data: bytes, count: int) -> np.ndarray:
        upload = unique_upload(data, count)  # as read from the request: its own bytes
        hashlib.sha256(upload).hexdigest()
        store.put(upload, max_pixels=DEFAULT_MAX_PIXELS)
        next(puts)
        reduced = decode_for_model(upload, prep)
        judge(reduced, policy)
        return to_model_input(reduced.image, prep)

    try:
        cpu, wall = time.process_time(), time.perf_counter()
        rate = overlapped_rate(model_dir, photo_datas(items), prepare, args.batch, args.seconds)
        cores = (time.process_time() - cpu) / (time.perf_counter() - wall)
        put, stored = next(puts), sum(1 for _ in store.files())
        if stored < put:
            print(f"  the pipeline put {put} photos and the store holds {stored}: not all new")
        setting = f"batch {args.batch}, {PREP_WORKERS} workers"
        return Row("in-process pipeline", setting, rate, cores=cores)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time a process has used so far, from /proc; None where none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident memory so far (VmHWM), MiB; None where /proc has none."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return None


class Service:
    """`touchstone serve` in a subprocess, with its own data dir, and a member back end's key."""

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
        self.uploads = itertools.count()  # the running count that makes each upload new

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

    def peak_rss_mib(self) -> float | None:
        return peak_rss_mib(self.process.pid)

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
    """Client threads post items, each upload new, until `seconds` have passed: each request's
    result, and the wall time until the last answer."""
    start = time.perf_counter()
    deadline = start + seconds

    def client(worker: int) -> list[Result]:
        results: list[Result] = []
        headers = {"Authorization": f"Bearer {service.key}"}
        with httpx.Client(base_url=service.url, headers=headers, timeout=120) as http:
            n = worker
            while time.perf_counter() < deadline:
                item = items[n % len(items)]
                n += concurrency
                count = next(service.uploads)
                # A member each: members may submit 30 items an hour.
                form = {**FORM, "member_id": f"bench-{count}"}
                parts = [
                    (region, (name, unique_upload(data, count), media_type))
                    for region, (name, data, media_type) in item.parts
                ]
                began = time.perf_counter()
                try:
                    answer = http.post("/v1/appraisals", data=form, files=parts)
                except httpx.HTTPError as exc:
                    results.append((time.perf_counter() - began, 0, 0, 0, repr(exc)))
                    continue
                elapsed = time.perf_counter() - began
                if answer.status_code == 201:
                    # Every usable photo is scored; a member back end is not shown the scores.
                    scored = sum(f["usable"] for f in answer.json()["findings"])
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
    client_cpu, server_cpu = time.process_time(), cpu_seconds(service.process.pid)
    results, elapsed = post_for(service, items, concurrency, seconds)
    client_cores = (time.process_time() - client_cpu) / elapsed
    server_after = cpu_seconds(service.process.pid)
    server_cores = (
        (server_after - server_cpu) / elapsed
        if server_cpu is not None and server_after is not None
        else None
    )
    failed = [r for r in results if r[1] != 201]
    # Per item answered: a refusal is quick and would flatter the percentiles.
    latencies = np.array([r[0] for r in results if r[1] == 201] or [np.nan]) * 1000
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
        service.peak_rss_mib(),
        client_cores,
        server_cores,
    )


def service_rows(
    model: Path, batching: bool, args: argparse.Namespace, items: list[Item], console: Console
) -> tuple[list[Row], float | None]:
    """The service's rows at each concurrency, and its peak RSS (MiB) before the load."""
    folder = Path(tempfile.mkdtemp(prefix="touchstone-bench-"))
    service = Service(model, batching, args.batch, folder)
    try:
        service.wait_ready()
        idle_rss = service.peak_rss_mib()
        # Warm before timing: connections, the first batches, SQLite's first writes.
        warm, _ = post_for(service, items, 8, min(2.0, args.seconds))
        if not any(r[1] == 201 for r in warm):
            raise RuntimeError(f"no 201 while warming: {warm[0][1]} {warm[0][4]}")
        rows = []
        engine = "service" if batching else "service, no batching"
        for concurrency in CONCURRENCY:
            console.print(f"timing {engine}, {clients(concurrency)}")
            rows.append(measure_service(service, engine, items, concurrency, args.seconds))
        return rows, idle_rss
    except BaseException:
        console.print(f"[red]server log (tail):[/]\n{service.log()}")
        raise
    finally:
        service.stop()
        shutil.rmtree(folder, ignore_errors=True)


def torch_rows(
    run_dir: Path, images: list[Image.Image], args: argparse.Namespace, threads: int
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
    pixels = [to_model_input(image, trained.preprocessing) for image in images]

    @torch.no_grad()
    def forward(batch: np.ndarray) -> None:
        net(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last))

    return in_process_rows("torch eager", forward, pixels, args.batch, args.seconds), ""


def verdict(met: bool) -> str:
    return "[green]met[/]" if met else "[red]missed[/]"


def target_lines(
    floor: Row, pipeline: Row, on: dict[str, Row], per_item: float, idle_rss: float | None
) -> list[str]:
    """The three targets with their measured ratios, and the server's peak memory."""
    top = on[clients(max(CONCURRENCY))]  # saturation: the most clients, batching on
    one = on[clients(1)]
    floor_item_ms = per_item / floor.photos_per_s * 1000
    of_floor = pipeline.photos_per_s / floor.photos_per_s
    of_pipeline = top.photos_per_s / pipeline.photos_per_s
    item_ratio = one.p50_ms / floor_item_ms if one.p50_ms is not None else float("nan")

    def mib(value: float | None) -> str:
        return "?" if value is None else f"{value:.0f}"

    return [
        f"pipeline / floor: {pipeline.photos_per_s:.1f} / {floor.photos_per_s:.1f} photos/s = "
        f"{of_floor:.2f}; target {PIPELINE_OF_FLOOR}: {verdict(of_floor >= PIPELINE_OF_FLOOR)}",
        f"service at saturation ({top.setting}) / pipeline: {top.photos_per_s:.1f} / "
        f"{pipeline.photos_per_s:.1f} photos/s = {of_pipeline:.2f}; target "
        f"{SERVICE_OF_PIPELINE}: {verdict(of_pipeline >= SERVICE_OF_PIPELINE)}",
        f"an item of {per_item:.3g} photos at 1 client: p50 {one.p50_ms:.0f} ms = "
        f"{item_ratio:.2f} x the floor's {floor_item_ms:.0f} ms for {per_item:.3g} photos; "
        f"target {ITEM_P50_OF_FLOOR:g}x at most: {verdict(item_ratio <= ITEM_P50_OF_FLOOR)}",
        *_per_core_line(pipeline, top),
        f"server peak RSS (VmHWM), batching on: {mib(idle_rss)} MiB before the load; after "
        + " / ".join(str(concurrency) for concurrency in CONCURRENCY)
        + " clients: "
        + " / ".join(mib(on[clients(c)].peak_rss_mib) for c in CONCURRENCY)
        + " MiB",
    ]


def _per_core_line(pipeline: Row, top: Row) -> list[str]:
    """The clients run on the server's cores: photos per CPU second the server used, against
    the pipeline's photos per CPU second, says what serving itself costs a photo."""
    if not (pipeline.cores and top.server_cores and top.cores is not None):
        return []
    server, alone = top.photos_per_s / top.server_cores, pipeline.photos_per_s / pipeline.cores
    return [
        f"per CPU second at saturation: the server {server:.1f} photos (it had "
        f"{top.server_cores:.2f} cores, the clients {top.cores:.2f}) / the pipeline "
        f"{alone:.1f} = {server / alone:.2f}"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", choices=("square", "phone"), default="square")
    parser.add_argument("--model", type=Path, default=Path("experiments/demo/model"))
    parser.add_argument("--run", type=Path, default=Path("experiments/demo/run"))
    parser.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 s each")
    parser.add_argument("--batch", type=int, default=16, help="the service's --max-batch")
    parser.add_argument(
        "--items", type=int, help="distinct items: 200 square, 4 phone (2 with --quick)"
    )
    parser.add_argument(
        "--headline", action="store_true", help="print only the targets and the memory"
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds = 2.0
    phone = args.photos == "phone"
    if args.items is None:
        args.items = (2 if args.quick else 4) if phone else 200
    os.environ.update(ENV)  # for torch's side (training imports albumentations and mlflow)
    console = Console(quiet=args.headline)
    if not console.is_terminal:  # piped or logged: rich would squeeze the table into 80 columns
        console = Console(width=150, quiet=args.headline)
    if not (args.model / "model.json").exists():
        raise SystemExit(f"{args.model}: no model.json; `make demo` exports one there")
    threads = default_threads()

    model = OnnxModel(args.model, threads)
    prep = model.preprocessing
    if phone:
        console.print(f"making {args.items} items of {PHONE_PHOTOS} phone photos")
        items = phone_items(model, args.items)
    else:
        console.print("choosing items and checking their photos")
        items = choose_items(model, args.items)
    datas = photo_datas(items)
    per_item = len(datas) / len(items)
    images = [decode_for_model(data, prep).image for data in datas[: 4 * args.batch]]

    console.print("timing raw ONNX Runtime in process")
    pixels = [to_model_input(image, prep) for image in images]
    references = in_process_rows(
        "raw ONNX Runtime", model.predict, pixels, args.batch, args.seconds
    )
    del model  # its thread pool must not sit beside the others

    # The floor's work per photo on one thread: what each photo costs besides inference.
    rate, median_ms = time_calls(
        lambda batch: [to_model_input(decode_for_model(d, prep).image, prep) for d in batch],
        [[data] for data in datas[:200]],
        min(args.seconds, 5.0),
    )
    references.append(Row("floor's photo work", "1 thread", rate, p50_ms=median_ms))

    console.print("timing the floor")
    floor = floor_row(args.model, items, prep, args)
    console.print("timing the in-process pipeline")
    pipeline = pipeline_row(args.model, items, prep, args)
    rows = [floor, pipeline]
    idle_rss: dict[bool, float | None] = {}
    for batching in (True, False):
        service, idle_rss[batching] = service_rows(args.model, batching, args, items, console)
        rows += service

    console.print("timing torch eager")
    torch_result, skipped = torch_rows(args.run, images, args, threads)
    if torch_result is None:
        console.print(f"[yellow]{skipped}[/]")
    else:
        references += torch_result
    rows += references

    card = json.loads((args.model / "model.json").read_text())
    width, height = PHONE_FRAME
    kind = f"phone photos ({width}x{height} JPEG)" if phone else "square photos"
    table = Table(
        title=f"{kind}, {card['architecture']} at {card['preprocessing']['input_size']} px, "
        f"{threads} ONNX Runtime / torch threads, {args.seconds:g} s each, "
        f"{len(items)} items ({len(datas)} photos, {per_item:.1f} per item)"
    )
    columns = ("engine", "setting", "photos/s", "items/s", "p50 ms", "p99 ms")
    for column in (*columns, "not 201 (503)", "peak RSS MiB", "cores (server)", "x floor"):
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
            "" if row.peak_rss_mib is None else f"{row.peak_rss_mib:.0f}",
            ("" if row.cores is None else f"{row.cores:.2f}")
            + ("" if row.server_cores is None else f" ({row.server_cores:.2f})"),
            f"{row.photos_per_s / floor.photos_per_s:.2f}",
        )
    console.print(table)
    console.print(
        "in-process rows: p50 ms is the median time of one call (batch or photo); service "
        "rows: per item, and the server's peak RSS so far; cores: CPU seconds a second of "
        "this process (for the service rows, its client threads) and of the server"
    )

    on = {r.setting: r for r in rows if r.engine == "service"}
    off = {r.setting: r for r in rows if r.engine == "service, no batching"}
    lines = target_lines(floor, pipeline, on, per_item, idle_rss[True])
    for line in lines:
        Console(width=console.width).print(line)
    top = on[clients(max(CONCURRENCY))]
    best = max(on.values(), key=lambda r: r.photos_per_s)
    if best is not top:
        console.print(
            f"best batching row: {best.setting}, {best.photos_per_s:.1f} photos/s = "
            f"{best.photos_per_s / pipeline.photos_per_s:.2f} x the pipeline"
        )
    console.print(
        "batching on / off, photos/s: "
        + ", ".join(
            f"{setting} {on[setting].photos_per_s / off[setting].photos_per_s:.2f}"
            for setting in on
            if off.get(setting) and off[setting].photos_per_s > 0
        )
    )
    rss = idle_rss[False]
    console.print(f"no batching: server peak RSS {rss and round(rss)} MiB before the load")


if __name__ == "__main__":
    main()
