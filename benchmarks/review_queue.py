"""Review queue throughput: claims plus verdicts per second, and double claims, in one run.

    .venv/bin/python benchmarks/review_queue.py [--tasks 2000] [--http-tasks 1000] \
        [--http-fill upload|direct] [--postgres postgresql://postgres@127.0.0.1:5432/postgres] \
        [--quick]

Reviewers loop claim -> verdict ("authentic") until the queue is empty, each with an API key of
their own (`serving.auth.create_key`, role reviewer), all starting at once (a barrier). Rows:

1. The service layer in process, PostgreSQL, 1, 8 and 32 reviewers: `ReviewService` (600 s
   leases, as the server's default) on the engine the server makes (`serving.db.make_engine`:
   a pool of 10 plus 20 overflow connections, so 32 threads share at most 30 and connections
   above 10 are closed when given back; "conns opened" counts the new ones during the timed
   loop). Reviewers are threads calling `claim` and `verdict`. The queue is filled with the
   ORM: appraisals routed to people (`model_unavailable`, one review each, tiers drawn at random
   so the SLA order is mixed, two photo rows each) and their tasks from `serving.review.tasks_for`.
2. HTTP, PostgreSQL, 1, 8 and 32 reviewers: a real `touchstone serve` subprocess with no model,
   default settings, on that database; client threads with one httpx.Client each post
   `/v1/review/claim` (the service's claim plus the task's page, `view`) and
   `/v1/review/tasks/{id}/verdict` (the verdict plus the appraisal it returns). The queue is
   filled through `POST /v1/appraisals` with a member_backend key, its 500 members' tiers
   announced first with a platform key (`--http-fill upload`, the default: two
   generated 96 px photos per item, 8 uploading threads; with no model every item goes to one
   reviewer), or with the ORM as for row 1 (`--http-fill direct`). The fill is not timed as
   part of the review loop; its rate is printed.
3. For reference: the service layer in process on SQLite (a temporary data dir, the server's
   pragmas), 8 reviewers.

Every row gets a fresh database (PostgreSQL: created here and dropped afterwards, whatever
happens), so rows do not share tables or caches of each other's work. The timed loop runs from
the barrier until the last reviewer has seen the queue empty (its final empty claim included).
claims+verdicts/s counts successful calls; claim latency is per successful claim, seen by the
caller (in process: the method call; HTTP: the request).

Double claims, which must be 0: tasks handed to two or more reviewers (no lease runs out in a
600 s lease, so a second reviewer is always a double), as the threads saw them and as the audit
log's `claim` entries record them; tasks with more than one row in `verdicts`; verdicts written
by a reviewer other than the one the task was handed to. The union of those task ids is counted.
"left" counts tasks still open or claimed after the loop (must be 0: none missed). Errors are
calls that raised or answered neither 200 nor 204; the loop goes on after one.

Everything runs on this machine: reviewers, server, client threads and PostgreSQL share its
cores, so the rows measure the queue on one box, not the database's ceiling. Nothing else heavy
should run meanwhile (the load average is printed before and after).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from serving.auth import Caller, create_key
from serving.benefits.config import BenefitsConfig
from serving.benefits.ledger import Ledger
from serving.db import (
    ApiKey,
    Appraisal,
    AuditEntry,
    Photo,
    ReviewTask,
    Verdict,
    default_database_url,
    make_engine,
    make_sessionmaker,
    upgrade,
    utcnow,
)
from serving.lifecycle import standard_lifecycle
from serving.policy.routing import sla_due
from serving.review.service import ReviewService
from serving.review.tasks import VerdictIn, tasks_for
from serving.settings import Settings

TOUCHSTONE = str(Path(sys.executable).parent / "touchstone")
CONCURRENCY = (1, 8, 32)
SQLITE_REVIEWERS = 8
LEASE_SECONDS = 600.0  # the server's default
UPLOAD_THREADS = 8
MAX_ERRORS_IN_A_ROW = 50  # a reviewer gives up after this many failed calls in a row
VERDICT = VerdictIn("authentic", "benchmark", [])
REGIONS = ("hardware", "logo")  # two photos: the policy's minimum

Claim = Callable[[], int | None]
Decide = Callable[[int], None]


@dataclass
class Handled:
    task: int
    claim_s: float
    verdict_s: float | None  # None: the verdict failed
    claimed_at: float  # perf_counter when the claim returned
    done_at: float


@dataclass
class Seen:
    """What one reviewer thread saw."""

    reviewer: int
    key_id: int
    handled: list[Handled] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Row:
    layer: str
    database: str
    reviewers: int
    tasks: int
    done: int
    seconds: float
    ops_per_s: float
    claim_p50_ms: float
    claim_p99_ms: float
    verdict_p50_ms: float
    double: int
    errors: int
    left: int
    conns_opened: int | None = None
    detail: str = ""


# -- the reviewers' loop -------------------------------------------------------------------


def review_loop(seen: Seen, claim: Claim, decide: Decide, start: threading.Barrier) -> None:
    """Claim, decide, until a claim finds nothing; errors are recorded and the loop goes on."""
    start.wait()
    in_a_row = 0
    while in_a_row < MAX_ERRORS_IN_A_ROW:
        began = time.perf_counter()
        try:
            task = claim()
        except Exception as exc:
            seen.errors.append(f"claim: {exc!r}"[:300])
            in_a_row += 1
            continue
        claimed = time.perf_counter()
        if task is None:
            return
        verdict_s: float | None = None
        try:
            decide(task)
            verdict_s = time.perf_counter() - claimed
            in_a_row = 0
        except Exception as exc:
            seen.errors.append(f"verdict on task {task}: {exc!r}"[:300])
            in_a_row += 1
        seen.handled.append(Handled(task, claimed - began, verdict_s, claimed, time.perf_counter()))


def run_reviewers(
    keys: list[tuple[str, int]], worker: Callable[[Seen, threading.Barrier], None]
) -> tuple[list[Seen], float]:
    """One thread per key, released together; what each saw, and seconds from the release
    until the last one finished."""
    seen = [Seen(n, key_id) for n, (_, key_id) in enumerate(keys)]
    start = threading.Barrier(len(keys) + 1, timeout=300)  # a thread that died breaks it
    threads = [threading.Thread(target=worker, args=(s, start)) for s in seen]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return seen, time.perf_counter() - began


# -- filling the queue -------------------------------------------------------------------


def new_keys(sessions: sessionmaker, role: str, count: int) -> list[tuple[str, int]]:
    """`count` API keys of `role`: (the key, its id)."""
    keys = []
    with sessions() as session:
        for n in range(count):
            token = create_key(session, role, f"benchmark {role} {n}")
            prefix = token.split("_", 2)[1]
            keys.append((token, session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix))))
    return keys


def fill_direct(sessions: sessionmaker, count: int, seed: int = 7) -> None:
    """`count` appraisals routed to one reviewer each, with their tasks, in one transaction."""
    policy = Settings().policy_config
    rng = random.Random(seed)
    now = utcnow()
    with sessions() as session, session.begin():
        for n in range(count):
            tier = rng.choice(policy.tiers)
            created = now - dt.timedelta(seconds=rng.uniform(0, 3600))
            appraisal = Appraisal(
                id=str(uuid.uuid4()),
                member_id=f"bench-{n % 500}",
                member_tier=tier,
                category="bag",
                status="in_review",
                path="human",
                rule="model_unavailable",
                reasons=["no model is loaded, so a reviewer decides"],
                reviews_required=1,
                photo_rounds=1,
                created_at=created,
                updated_at=created,
                sla_due_at=sla_due(tier, created, policy),
            )
            appraisal.photos = [
                Photo(
                    region=region,
                    sha256=f"{n:032x}{i:032x}",
                    upload_sha256=f"{n:032x}{i:032x}",
                    width=96,
                    height=96,
                )
                for i, region in enumerate(REGIONS)
            ]
            session.add(appraisal)
            session.add_all(tasks_for(appraisal))


def photos() -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart photo parts that pass the quality checks: textured, mid-bright JPEGs."""
    parts = []
    for n, region in enumerate(REGIONS):
        rng = np.random.default_rng(n)
        pixels = np.full((96, 96, 3), (120 + 20 * n, 90, 60), np.float32)
        pixels += rng.normal(0, 40, pixels.shape)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(buffer, "JPEG", quality=90)
        parts.append((region, (f"{region}.jpg", buffer.getvalue(), "image/jpeg")))
    return parts


_FILL_ROLES = ("member_backend", "platform")


def fill_upload(url: str, key: str, platform_key: str, count: int) -> float:
    """Upload `count` items through the API (8 threads); seconds taken."""
    parts = photos()
    tiers = Settings().policy_config.tiers
    with httpx.Client(base_url=url, headers=bearer(platform_key), timeout=120) as platform:
        for n in range(min(count, 500)):  # the tier comes from the platform, not the form
            tier = {"tier": tiers[n % len(tiers)]}
            platform.put(f"/v1/members/bench-{n}", json=tier).raise_for_status()

    def upload(worker: int) -> None:
        with httpx.Client(base_url=url, headers=bearer(key), timeout=120) as http:
            for n in range(worker, count, UPLOAD_THREADS):
                form = {"member_id": f"bench-{n % 500}"}
                answer = http.post("/v1/appraisals", data={**form, "category": "bag"}, files=parts)
                if answer.status_code != 201 or answer.json()["status"] != "in_review":
                    raise RuntimeError(f"upload {n}: {answer.status_code} {answer.text[:300]}")

    began = time.perf_counter()
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(upload, range(UPLOAD_THREADS)))
    return time.perf_counter() - began


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- databases and the server -------------------------------------------------------------


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    import psycopg

    name = f"touchstone_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def migrated_engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(database_url: str) -> Iterator[str]:
    """`touchstone serve` with no model on `database_url`, in a temporary data dir: its URL."""
    folder = Path(tempfile.mkdtemp(prefix="touchstone-bench-review-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [TOUCHSTONE, "serve", "--port", str(port), "--data-dir", str(folder / "data")]
    env = {**os.environ, "TOUCHSTONE_DATABASE_URL": database_url}
    log_path = folder / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{log_path.read_text()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.2)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


# -- the rows ----------------------------------------------------------------------------


def in_process_row(url: str, database: str, reviewers: int, tasks: int) -> Row:
    with migrated_engine(url) as engine:
        sessions = make_sessionmaker(engine)
        fill_direct(sessions, tasks)
        keys = new_keys(sessions, "reviewer", reviewers)
        service = ReviewService(
            sessions, standard_lifecycle(Ledger(BenefitsConfig())), LEASE_SECONDS
        )
        opened = [0]
        event.listen(engine, "connect", lambda *_: opened.__setitem__(0, opened[0] + 1))
        # Warm the pool as far as it keeps connections, so the loop does not pay for them.
        warm = [engine.connect() for _ in range(min(reviewers, engine.pool.size()))]
        for connection in warm:
            connection.close()
        before = opened[0]

        def worker(seen: Seen, start: threading.Barrier) -> None:
            caller = Caller(seen.key_id, "reviewer")
            review_loop(
                seen,
                lambda: service.claim(caller),
                lambda task: service.verdict(caller, task, VERDICT),
                start,
            )

        seen, seconds = run_reviewers(keys, worker)
        row = summarize("in process", database, seen, seconds, sessions)
        row.conns_opened = opened[0] - before
        return row


def http_row(url: str, reviewers: int, tasks: int, fill: str) -> tuple[Row, float | None]:
    """The HTTP row and, for uploads, the fill's seconds."""
    with server(url) as base, migrated_engine(url) as engine:
        sessions = make_sessionmaker(engine)
        fill_seconds = None
        if fill == "upload":
            backend, platform = (new_keys(sessions, role, 1)[0][0] for role in _FILL_ROLES)
            fill_seconds = fill_upload(base, backend, platform, tasks)
        else:
            fill_direct(sessions, tasks)
        keys = new_keys(sessions, "reviewer", reviewers)

        def worker(seen: Seen, start: threading.Barrier) -> None:
            headers = bearer(keys[seen.reviewer][0])
            with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
                with contextlib.suppress(httpx.HTTPError):  # connect first; failures show later
                    http.get("/v1/review/queue")

                def claim() -> int | None:
                    answer = http.post("/v1/review/claim")
                    if answer.status_code == 204:
                        return None
                    if answer.status_code != 200:
                        raise RuntimeError(f"{answer.status_code} {answer.text[:200]}")
                    return answer.json()["task"]["id"]

                def decide(task: int) -> None:
                    answer = http.post(
                        f"/v1/review/tasks/{task}/verdict", json={"outcome": "authentic"}
                    )
                    if answer.status_code != 200:
                        raise RuntimeError(f"{answer.status_code} {answer.text[:200]}")

                review_loop(seen, claim, decide, start)

        seen, seconds = run_reviewers(keys, worker)
        return summarize("HTTP", "PostgreSQL", seen, seconds, sessions), fill_seconds


def double_claims(seen: list[Seen], sessions: sessionmaker) -> tuple[set[int], str]:
    """Task ids handed to two reviewers or decided twice (see the module docstring), and a
    breakdown of where each kind was seen."""
    handed: dict[int, set[int]] = defaultdict(set)
    spans: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    for s in seen:
        for h in s.handled:
            handed[h.task].add(s.key_id)
            spans[h.task].append((h.claimed_at, h.done_at, s.key_id))
    by_threads = {task for task, who in handed.items() if len(who) > 1}
    at_once = {
        task
        for task in by_threads
        if any(
            a[2] != b[2] and a[0] < b[1] and b[0] < a[1]
            for i, a in enumerate(spans[task])
            for b in spans[task][i + 1 :]
        )
    }
    with sessions() as session:
        audited: dict[int, set[int]] = defaultdict(set)
        for actor, detail in session.execute(
            select(AuditEntry.actor, AuditEntry.detail).where(AuditEntry.action == "claim")
        ):
            audited[int(detail["task"])].add(actor)
        by_audit = {task for task, who in audited.items() if len(who) > 1}
        twice = set(
            session.scalars(
                select(Verdict.task_id).group_by(Verdict.task_id).having(func.count() > 1)
            )
        )
        verdicts = session.execute(select(Verdict.task_id, Verdict.reviewer)).all()
    wrong = {task for task, reviewer in verdicts if reviewer not in handed.get(task, set())}
    detail = (
        f"handed to 2+ reviewers: {len(by_threads)} (at once: {len(at_once)}), in the audit "
        f"log: {len(by_audit)}; 2+ verdicts: {len(twice)}; verdict by another reviewer: "
        f"{len(wrong)}"
    )
    return by_threads | by_audit | twice | wrong, detail


def summarize(
    layer: str, database: str, seen: list[Seen], seconds: float, sessions: sessionmaker
) -> Row:
    handled = [h for s in seen for h in s.handled]
    claims = np.array([h.claim_s for h in handled]) * 1000
    verdicts = np.array([h.verdict_s for h in handled if h.verdict_s is not None]) * 1000
    doubles, detail = double_claims(seen, sessions)
    with sessions() as session:
        # Every task was made by the fill: single reviews that all agree make no new ones.
        tasks = session.scalar(select(func.count(ReviewTask.id))) or 0
        done = session.scalar(select(func.count(Verdict.id))) or 0
        left = session.scalar(
            select(func.count(ReviewTask.id)).where(ReviewTask.status.in_(("open", "claimed")))
        )
    errors = [e for s in seen for e in s.errors]
    if errors:
        detail += f"; first error: {errors[0]}"

    def pct(values: np.ndarray, q: float) -> float:
        return float(np.percentile(values, q)) if len(values) else float("nan")

    return Row(
        layer,
        database,
        len(seen),
        int(tasks),
        int(done),
        seconds,
        (len(claims) + len(verdicts)) / seconds,
        pct(claims, 50),
        pct(claims, 99),
        pct(verdicts, 50),
        len(doubles),
        len(errors),
        int(left or 0),
        detail=detail,
    )


# -- main --------------------------------------------------------------------------------


def reviewers_label(count: int) -> str:
    return f"{count} reviewer{'s' if count > 1 else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per in-process row")
    parser.add_argument("--http-tasks", type=int, default=1000, help="tasks per HTTP row")
    parser.add_argument("--http-fill", choices=("upload", "direct"), default="upload")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a database to connect to for creating and dropping the benchmark's own",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 and 100 tasks")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.http_tasks = 200, 100
    console = Console()
    if not console.is_terminal:  # piped or logged: rich would squeeze the table into 80 columns
        console = Console(width=180)
    import psycopg

    with psycopg.connect(args.postgres) as admin:
        version = admin.execute("SHOW server_version").fetchone()[0].split()[0]
    load_before = os.getloadavg()
    rows: list[Row] = []
    fills: list[tuple[int, float]] = []
    for count in CONCURRENCY:
        console.print(f"in process, PostgreSQL, {reviewers_label(count)}: {args.tasks} tasks")
        with postgres_database(args.postgres) as url:
            rows.append(in_process_row(url, "PostgreSQL", count, args.tasks))
    for count in CONCURRENCY:
        console.print(
            f"HTTP, PostgreSQL, {reviewers_label(count)}: {args.http_tasks} tasks "
            f"({args.http_fill})"
        )
        with postgres_database(args.postgres) as url:
            row, fill_seconds = http_row(url, count, args.http_tasks, args.http_fill)
            rows.append(row)
            if fill_seconds is not None:
                fills.append((args.http_tasks, fill_seconds))
    console.print(f"in process, SQLite, {reviewers_label(SQLITE_REVIEWERS)}: {args.tasks} tasks")
    folder = Path(tempfile.mkdtemp(prefix="touchstone-bench-review-sqlite-"))
    try:
        rows.append(
            in_process_row(default_database_url(folder), "SQLite", SQLITE_REVIEWERS, args.tasks)
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    load_after = os.getloadavg()

    table = Table(
        title=f"Review queue: claim -> verdict until empty; PostgreSQL {version}, "
        f"{os.cpu_count()} cores, everything on this machine"
    )
    columns = ("layer", "database", "reviewers", "tasks", "done", "seconds", "claims+verdicts/s")
    columns += ("claim p50 ms", "claim p99 ms", "verdict p50 ms", "double claims", "errors")
    for column in (*columns, "left", "conns opened"):
        table.add_column(column, justify="right")
    for row in rows:
        double = f"[green]{row.double}[/]" if row.double == 0 else f"[red]{row.double}[/]"
        table.add_row(
            row.layer,
            row.database,
            str(row.reviewers),
            str(row.tasks),
            str(row.done),
            f"{row.seconds:.2f}",
            f"{row.ops_per_s:.1f}",
            f"{row.claim_p50_ms:.1f}",
            f"{row.claim_p99_ms:.1f}",
            f"{row.verdict_p50_ms:.1f}",
            double,
            str(row.errors),
            str(row.left),
            "" if row.conns_opened is None else str(row.conns_opened),
        )
    console.print(table)

    for layer in ("in process", "HTTP"):
        by = {r.reviewers: r for r in rows if r.layer == layer and r.database == "PostgreSQL"}
        one = by[1].ops_per_s
        console.print(
            f"{layer}, PostgreSQL: claims+verdicts/s "
            + ", ".join(f"{n}: {by[n].ops_per_s:.0f}" for n in CONCURRENCY)
            + "; x 1 reviewer: "
            + ", ".join(f"{n}: {by[n].ops_per_s / one:.2f}" for n in CONCURRENCY[1:])
        )
    pg8 = next(r for r in rows if r.layer == "in process" and r.reviewers == SQLITE_REVIEWERS)
    lite = rows[-1]
    console.print(
        f"SQLite / PostgreSQL in process at {SQLITE_REVIEWERS} reviewers: "
        f"{lite.ops_per_s / pg8.ops_per_s:.2f}"
    )
    if fills:
        total, seconds = sum(n for n, _ in fills), sum(s for _, s in fills)
        console.print(
            f"HTTP rows filled by upload: {total} items in {seconds:.1f} s "
            f"({total / seconds:.1f} uploads/s, {UPLOAD_THREADS} threads; not in the timed loop)"
        )
    else:
        console.print("HTTP rows filled with the ORM (--http-fill direct)")
    for row in rows:
        console.print(
            f"{row.layer}, {row.database}, {reviewers_label(row.reviewers)}: {row.detail}"
        )
    doubles = sum(r.double for r in rows)
    missed = sum(r.tasks - r.done for r in rows)
    verdict = "[green]0, as required[/]" if doubles == 0 else f"[red]{doubles}: MUST BE 0[/]"
    console.print(f"double claims in all rows: {verdict}")
    console.print(f"tasks not done: {missed}" + (" [red](some were missed)[/]" if missed else ""))
    console.print(
        "load average (1, 5, 15 min) before: "
        + ", ".join(f"{x:.2f}" for x in load_before)
        + "; after: "
        + ", ".join(f"{x:.2f}" for x in load_after)
    )


if __name__ == "__main__":
    main()
