"""`make demo`'s recertification loop, in short: traffic, simulated audit verdicts, a new card.

    .venv/bin/python scripts/demo_recertify.py --model experiments/demo/model \
        --data experiments/demo/holdout/manifest.csv --work experiments/demo/recertify \
        --out experiments/demo/model-recertified [--items 400] [--split test] [--clients 3] \
        [--audit-share 0.5] [--counterfeit-share 0.2]

1. Starts a real `touchstone serve` (a subprocess) on a fresh data directory under --work
   (SQLite) with the model and a policy written there that audits `--audit-share` of the items
   the model may judge, certified sides or not, and creates a member back end's, a reviewer's
   and an admin's key with `touchstone admin create-key`.
2. Submits `--items` items of the hold-out's `--split`, `--counterfeit-share` of them
   counterfeit, through `POST /v1/appraisals` as the member back end, from a few concurrent
   clients, each item for a new explorer (not VIP: a VIP's item always goes to a person and is
   never audited); the admin reads each appraisal's rule.
3. Plays the reviewers: every task of an `audit_sample` item is claimed and given the hold-out's
   true label as its verdict (the simulated audit verdict). Other tasks (uncertain, missing a
   region) are left alone: claims come earliest deadline first and a reviewer holds one task at
   a time, so one that claims another task keeps it, as a colleague working it would, and the
   next reviewer claims on; at the end they release them.
4. Stops the server and runs `touchstone recertify`, whose before/after table it prints.

Exit code 0 when a recertified card is written; otherwise the failing step's message and 1, or
`touchstone recertify`'s own code (2 when it refuses, e.g. with no audited item to certify on).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from touchstone.data.manifest import load_manifest

TOUCHSTONE = str(Path(sys.executable).parent / "touchstone")
# Sized for about 2 minutes on 2 cores with the demo's 1008x756 phone photos, with half of the
# items audited (docs/recertification.md#in-the-demo).
DEFAULT_ITEMS = 400
# Real traffic uses the policy's defaults (2% audited, 25% while a side is unsupported): weeks
# of traffic bring a few hundred audited items. A short form must get many audited items from a
# few hundred submissions, so half of the items the model may judge go to a reviewer.
DEFAULT_AUDIT_SHARE = 0.5
# Traffic's mix, the middle of the range a card's rate bounds are declared for (10% to 30% by
# default); the hold-out's own (40%) would lie outside it, and recertify would warn so.
DEFAULT_COUNTERFEIT_SHARE = 0.2
MEDIA_TYPES = {".png": "image/png", ".webp": "image/webp", ".heic": "image/heic"}

console = Console()


class StepFailed(Exception):
    """A step of the loop failed; the message says which and why."""


@dataclass(frozen=True)
class Item:
    item_id: str
    label: str  # the hold-out's truth: the simulated reviewer's verdict
    category: str
    photos: list[tuple[str, Path]]  # (region, file)


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )


def hold_out_items(manifest: Path, split: str, count: int, counterfeit_share: float) -> list[Item]:
    """`count` items of the split at about `counterfeit_share` counterfeits (fewer where the split
    runs out of a class), the first of each class by item id, the classes interleaved."""
    by_item: dict[str, list] = {}
    for record in load_manifest(manifest).records:
        if record.split == split:
            by_item.setdefault(record.item_id, []).append(record)
    if not by_item:
        raise StepFailed(f"{manifest} has no item in split {split!r}")
    items = [
        Item(item_id, rows[0].label, rows[0].category or "bag", [(r.region, r.path) for r in rows])
        for item_id, rows in sorted(by_item.items())
    ]
    fakes = [item for item in items if item.label == "counterfeit"]
    reals = [item for item in items if item.label != "counterfeit"]
    fakes = fakes[: min(round(count * counterfeit_share), len(fakes))]
    reals = reals[: count - len(fakes)]
    # Each item's place in the run spread evenly, so both classes arrive all along.
    placed = [(n / len(group), n, item) for group in (fakes, reals) for n, item in enumerate(group)]
    return [item for *_, item in sorted(placed, key=lambda p: (p[0], p[1]))]


def service_env() -> dict[str, str]:
    """The service's environment: its own SQLite in the fresh data directory, never a database
    named outside (`touchstone recertify` reads the same one)."""
    env = dict(os.environ)
    env.pop("TOUCHSTONE_DATABASE_URL", None)
    return env


def create_key(data_dir: Path, role: str) -> str:
    """A key made as an operator makes one: the key alone on the command's last line."""
    args = ["admin", "create-key", "--role", role, "--data-dir", str(data_dir)]
    command = [TOUCHSTONE, *args, "--label", f"demo-recertify-{role}"]
    done = subprocess.run(command, capture_output=True, text=True, env=service_env())
    if done.returncode != 0 or not done.stdout.strip():
        raise StepFailed(f"touchstone admin create-key --role {role} failed: {done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def colleague_key(data_dir: Path, number: int) -> str:
    """Another reviewer's key, written straight into the service's database (as the benchmarks
    and tests do): a command per colleague costs seconds, and the loop may need one for every
    other review task ahead of the last audit (183 in the measured run)."""
    from serving.auth import create_key as new_key
    from serving.db import default_database_url, make_engine, make_sessionmaker

    engine = make_engine(default_database_url(data_dir))
    try:
        with make_sessionmaker(engine)() as session:
            return new_key(session, "reviewer", f"demo-recertify-colleague-{number}")
    finally:
        engine.dispose()


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower(), "image/jpeg")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, data_dir: Path, policy: Path, log: Path) -> Server:
    port = free_port()
    args = [TOUCHSTONE, "serve", "--model", str(model), "--data-dir", str(data_dir)]
    args += ["--port", str(port), "--policy", str(policy)]
    with open(log, "w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=service_env())
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StepFailed(f"touchstone serve exited ({process.returncode}):\n{tail(log)}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.3)
    stop_server(server)
    raise StepFailed(f"touchstone serve was not ready in 180 s:\n{tail(log)}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=30)


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def submit_all(
    server: Server, keys: dict[str, str], items: list[Item], clients: int, progress: Progress
) -> dict[str, tuple[Item, str]]:
    """Every item submitted once; appraisal id -> (item, the routing rule the admin reads)."""
    task = progress.add_task("submitting items", total=len(items))
    failed = threading.Event()  # one client's failure stops the others

    def client(worker: int) -> dict[str, tuple[Item, str]]:
        routed = {}
        backend, admin = server.client(keys["member_backend"]), server.client(keys["admin"])
        try:
            for number in range(worker, len(items), clients):
                if failed.is_set():
                    break
                item = items[number]
                files = [
                    (region, (path.name, path.read_bytes(), media_type(path)))
                    for region, path in item.photos
                ]
                # A member each (a member may submit 30 items an hour), an explorer: not VIP.
                form = {
                    "member_id": f"recertify-demo-{number}",
                    "member_tier": "explorer",
                    "category": item.category,
                }
                answer = backend.post("/v1/appraisals", data=form, files=files)
                if answer.status_code != 201:
                    raise StepFailed(
                        f"POST /v1/appraisals for {item.item_id}: {answer.status_code} "
                        f"{answer.text[:300]}"
                    )
                appraisal = answer.json()["id"]
                whole = admin.get(f"/v1/appraisals/{appraisal}")
                if whole.status_code != 200:
                    raise StepFailed(f"GET /v1/appraisals/{appraisal}: {whole.status_code}")
                routed[appraisal] = (item, whole.json()["decision"]["rule"])
                progress.advance(task)
        except BaseException:
            failed.set()
            raise
        finally:
            backend.close()
            admin.close()
        return routed

    with ThreadPoolExecutor(max_workers=clients) as pool:
        parts = list(pool.map(client, range(clients)))
    return {appraisal: found for part in parts for appraisal, found in part.items()}


def review_audits(
    server: Server,
    first_key: str,
    verdicts: dict[str, str],
    more_reviewers: Callable[[int], str],
    progress: Progress,
) -> int:
    """Each audited appraisal (id -> true label) finalised through the review API; other tasks
    held by the reviewer who claimed them, released at the end. The count of tasks held."""
    task = progress.add_task("audit verdicts", total=len(verdicts))
    held: list[tuple[str, int]] = []  # (key, task id)
    key, done = first_key, 0
    try:
        while done < len(verdicts):
            with server.client(key) as reviewer:
                claim = reviewer.post("/v1/review/claim")
                if claim.status_code == 204:
                    raise StepFailed(
                        f"the review queue ran dry with {len(verdicts) - done} audited "
                        "item(s) unreviewed"
                    )
                if claim.status_code != 200:
                    raise StepFailed(f"POST /v1/review/claim: {claim.status_code} {claim.text}")
                view = claim.json()
                task_id, appraisal = view["task"]["id"], view["appraisal"]["id"]
                if appraisal not in verdicts:
                    # Not an audit: this reviewer keeps it; the next one claims on.
                    held.append((key, task_id))
                    key = more_reviewers(len(held))
                    continue
                given = reviewer.post(
                    f"/v1/review/tasks/{task_id}/verdict", json={"outcome": verdicts[appraisal]}
                )
                if given.status_code != 200:
                    raise StepFailed(f"verdict on task {task_id}: {given.status_code} {given.text}")
                done += 1
                progress.advance(task)
    finally:
        for holder, task_id in held:  # left as found: open for the reviewers of real traffic
            with server.client(holder) as reviewer:
                reviewer.post(f"/v1/review/tasks/{task_id}/release")
    return len(held)


def run_loop(args: argparse.Namespace) -> int:
    if args.out.exists():
        raise StepFailed(f"{args.out} exists; remove it or name another --out")
    data_dir = args.work / "service"
    if data_dir.exists() and any(data_dir.iterdir()):
        raise StepFailed(f"{data_dir} is not empty; remove {args.work} first (make demo does)")
    items = hold_out_items(args.data, args.split, args.items, args.counterfeit_share)
    args.work.mkdir(parents=True, exist_ok=True)
    policy = args.work / "policy.yaml"
    policy.write_text(
        "# The demo's short form: many audited items from a few hundred submissions.\n"
        "# Real traffic keeps the defaults (2%; 25% while a side is unsupported).\n"
        f"audit_share: {args.audit_share}\naudit_share_while_unsupported: {args.audit_share}\n"
    )
    began = time.monotonic()
    with console.status("creating keys"):
        keys = {
            role: create_key(data_dir, role) for role in ("member_backend", "reviewer", "admin")
        }
    with console.status("starting touchstone serve"):
        server = start_server(args.model, data_dir, policy, args.work / "server.log")
    try:
        columns = (
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            routed = submit_all(server, keys, items, args.clients, progress)
            verdicts = {
                a: item.label for a, (item, rule) in routed.items() if rule == "audit_sample"
            }
            held = review_audits(
                server, keys["reviewer"], verdicts, lambda n: colleague_key(data_dir, n), progress
            )
    except httpx.HTTPError as exc:
        raise StepFailed(
            f"the service did not answer ({exc!r}); its log:\n{tail(server.log)}"
        ) from exc
    finally:
        stop_server(server)
    rules = Counter(rule for _, rule in routed.values())
    console.print(
        f"{len(routed)} items of the hold-out's {args.split} split in "
        f"{time.monotonic() - began:.0f} s: {rules['audit_sample']} audited and finalised with "
        f"their true labels, other review tasks left open ({held} of them claimed on the way "
        "and released); by rule: " + ", ".join(f"{rule} {n}" for rule, n in sorted(rules.items())),
        highlight=False,
    )
    command = ["recertify", "--model", args.model, "--data-dir", data_dir, "--out", args.out]
    console.print("touchstone " + " ".join(map(str, command)), highlight=False)
    # Not captured: its tables go straight to the terminal.
    done = subprocess.run([TOUCHSTONE, *map(str, command)], env=service_env())
    if done.returncode != 0:
        console.print(
            f"[bold red]touchstone recertify refused or failed (exit {done.returncode}); "
            "its reason is above[/]"
        )
        return done.returncode
    console.print(
        f"the recertification loop took {time.monotonic() - began:.0f} s", highlight=False
    )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the exported model directory")
    parser.add_argument("--data", type=Path, required=True, help="the hold-out's manifest")
    parser.add_argument("--work", type=Path, required=True, help="the service's folder (fresh)")
    parser.add_argument("--out", type=Path, required=True, help="the recertified model (new)")
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS, help="items to submit")
    parser.add_argument("--split", default="test", help="the hold-out's split to submit")
    parser.add_argument("--clients", type=int, default=3, help="concurrent submitting clients")
    parser.add_argument(
        "--audit-share",
        type=float,
        default=DEFAULT_AUDIT_SHARE,
        help="share of the items the model may judge sent to the audit sample",
    )
    parser.add_argument(
        "--counterfeit-share",
        type=float,
        default=DEFAULT_COUNTERFEIT_SHARE,
        help="counterfeits among the items submitted (as far as the split has them)",
    )
    args = parser.parse_args(argv)
    shares = (args.audit_share, args.counterfeit_share)
    if args.items < 1 or args.clients < 1 or not all(0 <= share <= 1 for share in shares):
        parser.error("--items and --clients must be at least 1, the shares in [0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run_loop(args)
    except StepFailed as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
