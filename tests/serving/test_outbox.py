"""The outbox: events recorded with their cause, delivered by signed webhooks to real HTTP
receivers that fail, answer slowly, are down, or see a deliverer killed mid-POST."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from serving.benefits.config import BenefitsConfig
from serving.benefits.ledger import Ledger
from serving.db import Appraisal, OutboxEvent, make_engine, make_sessionmaker, upgrade, utcnow
from serving.lifecycle import standard_lifecycle
from serving.outbox.config import OutboxConfig, Webhook, safe_url
from serving.outbox.delivery import backoff_seconds, deliver_due, run_deliverer
from serving.outbox.events import record
from serving.outbox.signing import sign, verify
from serving.settings import Settings
from tests.serving_support import TOUCHSTONE, free_port

SECRET = "s3cret-for-tests"


# -- a receiver ---------------------------------------------------------------------------------


@dataclass
class Seen:
    event_id: str
    kind: str
    body: bytes
    valid: bool


@dataclass
class Receiver:
    """A membership platform: checks each signature, answers as `plan` says (one step per
    request: an HTTP status, or ("sleep", seconds, status)); 200 once the plan is spent."""

    url: str
    plan: list = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    processed: dict[str, dict] = field(default_factory=dict)  # by event id: duplicates dropped
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ids(self) -> list[str]:
        return [s.event_id for s in self.seen]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            valid = verify(SECRET, dict(self.headers.items()), body)
            with state.lock:
                step = state.plan.pop(0) if state.plan else 200
                state.seen.append(
                    Seen(
                        self.headers["Touchstone-Event-Id"],
                        self.headers["Touchstone-Event-Kind"],
                        body,
                        valid,
                    )
                )
            state.arrived.set()
            if isinstance(step, tuple):
                _, seconds, step = step
                state.release.wait(seconds)
            code = step if valid else 401
            if 200 <= code < 300:
                with state.lock:
                    event = json.loads(body)
                    state.processed.setdefault(event["id"], event)  # a duplicate is dropped
            try:
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:  # the deliverer gave up or was killed
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_port}/hooks/touchstone"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


def hooks(url: str, secret: str = SECRET) -> list[Webhook]:
    return [Webhook(url=url, secret=secret)]


# -- the database -------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path, database_url: str | None) -> Iterator[tuple[object, str | None, Path]]:
    url = database_url or f"sqlite:///{tmp_path / 'data' / 'touchstone.db'}"
    (tmp_path / "data").mkdir()
    engine = make_engine(url)
    upgrade(engine)
    try:
        yield make_sessionmaker(engine), database_url, tmp_path / "data"
    finally:
        engine.dispose()


@pytest.fixture
def sessions(store):  # type: ignore[no-untyped-def]
    return store[0]


def put(sessions, count: int = 1, kind: str = "benefit.granted") -> list[str]:  # type: ignore[no-untyped-def]
    with sessions() as session, session.begin():
        events = [
            record(session, kind, member_id=f"m{i}", payload={"asset": "coupon", "amount": i})
            for i in range(count)
        ]
        return [e.id for e in events]


def row(sessions, event_id: str) -> OutboxEvent:  # type: ignore[no-untyped-def]
    with sessions() as session:
        event = session.get(OutboxEvent, event_id)
        assert event is not None
        return event


def utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def appraisal(**values: object) -> Appraisal:
    defaults: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "member_id": "m-1",
        "member_tier": "collector",
        "category": "bag",
        "status": "decided",
        "outcome": "authentic",
        "path": "auto",
        "p_authentic": 0.97,
        "rule": "auto_authentic",
        "reasons": [],
        "model_name": "touchstone-bags",
        "model_version": "3",
        "sla_due_at": utcnow() + dt.timedelta(hours=24),
        "finalized_at": utcnow(),
    }
    return Appraisal(**(defaults | values))


# -- tests --------------------------------------------------------------------------------------


def test_delivery_is_signed_and_verified_by_the_receiver(sessions, receiver: Receiver) -> None:
    ids = put(sessions, 3)
    report = deliver_due(sessions, hooks(receiver.url))
    assert (report.claimed, report.delivered, report.retried) == (3, 3, 0)
    assert sorted(receiver.ids()) == sorted(ids)
    assert all(s.valid for s in receiver.seen)
    body = json.loads(receiver.seen[0].body)
    assert body["id"] == receiver.seen[0].event_id and body["kind"] == "benefit.granted"
    assert body["data"]["asset"] == "coupon"
    for event_id in ids:
        event = row(sessions, event_id)
        assert (event.status, event.attempts, event.last_error) == ("delivered", 1, None)
        assert event.delivered_at is not None
    assert not deliver_due(sessions, hooks(receiver.url))  # nothing left
    # A receiver with another secret refuses it (401): not delivered, tried again later.
    put(sessions, 1)
    report = deliver_due(sessions, hooks(receiver.url, "wrong"))
    assert report.retried == 1 and "HTTP 401" in report.errors[0]
    assert "wrong" not in report.errors[0] and SECRET not in report.errors[0]


def test_signature_helper_refuses_tampering_and_old_timestamps() -> None:
    body = b'{"id":"x"}'
    now = str(int(time.time()))
    headers = {"Touchstone-Timestamp": now, "Touchstone-Signature": sign(SECRET, now, body)}
    assert verify(SECRET, headers, body)
    assert not verify(SECRET, headers, body + b" ")
    assert not verify("other", headers, body)
    assert not verify(SECRET, headers, body, now=time.time() + 3600)


def test_failing_receiver_is_retried_with_backoff_then_delivered_once(
    sessions, receiver: Receiver
) -> None:
    receiver.plan = [500, 503, 500]
    (event_id,) = put(sessions, 1)
    options = {"backoff_base": 10.0, "backoff_max": 25.0, "jitter": 0.0}
    now = utcnow()
    waits = []
    for attempt in (1, 2, 3):
        report = deliver_due(sessions, hooks(receiver.url), now=now, **options)
        assert report.retried == 1, report
        event = row(sessions, event_id)
        assert event.status == "pending" and event.attempts == attempt
        assert "HTTP 50" in (event.last_error or "")
        due = utc(event.next_attempt_at)
        waits.append((due - now).total_seconds())
        # Not a moment before its time: the backoff is respected.
        early = due - dt.timedelta(seconds=1)
        assert not deliver_due(sessions, hooks(receiver.url), now=early, **options)
        now = due
    assert [round(w) for w in waits] == [10, 20, 25]  # 2^n, capped
    report = deliver_due(sessions, hooks(receiver.url), now=now, **options)
    assert report.delivered == 1
    event = row(sessions, event_id)
    assert (event.status, event.attempts) == ("delivered", 4)
    assert receiver.ids() == [event_id] * 4
    assert list(receiver.processed) == [event_id]  # delivered once


def test_backoff_has_jitter_below_the_exponential_wait() -> None:
    waits = {backoff_seconds(3, 2.0, 3600.0, 0.25) for _ in range(50)}
    assert all(6.0 <= w <= 8.0 for w in waits) and len(waits) > 1
    assert backoff_seconds(30, 2.0, 60.0, 0.0) == 60.0


def test_slow_receiver_times_out_and_is_retried(sessions, receiver: Receiver) -> None:
    receiver.plan = [("sleep", 2.0, 200)]
    (event_id,) = put(sessions, 1)
    started = time.monotonic()
    report = deliver_due(sessions, hooks(receiver.url), timeout=0.3, backoff_base=0.01)
    assert time.monotonic() - started < 1.5
    assert report.retried == 1 and "timed out" in report.errors[0]
    time.sleep(0.05)
    report = deliver_due(sessions, hooks(receiver.url), timeout=2.0)
    assert report.delivered == 1
    event = row(sessions, event_id)
    assert (event.status, event.attempts) == ("delivered", 2)
    assert receiver.ids() == [event_id, event_id]


def test_receiver_down_is_retried_then_dead_and_can_be_retried(store) -> None:
    sessions, database_url, data_dir = store
    down = f"http://127.0.0.1:{free_port()}/hooks"  # nothing listens: connection refused
    (event_id,) = put(sessions, 1, kind="sla.breached")
    now = utcnow()
    for attempt in (1, 2, 3):
        report = deliver_due(
            sessions, hooks(down), now=now, max_attempts=3, backoff_base=1.0, jitter=0.0
        )
        assert report.claimed == 1
        assert (report.dead, report.retried) == ((1, 0) if attempt == 3 else (0, 1))
        now += dt.timedelta(seconds=60)
    event = row(sessions, event_id)
    assert (event.status, event.attempts) == ("dead", 3)
    assert "ConnectError" in (event.last_error or "")
    assert not deliver_due(sessions, hooks(down), now=now + dt.timedelta(days=1))

    from cli import app

    runner = CliRunner()
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("TOUCHSTONE_DATABASE_URL", raising=False)
        if database_url:
            patch.setenv("TOUCHSTONE_DATABASE_URL", database_url)
        result = runner.invoke(app, ["outbox", "status", "--data-dir", str(data_dir)])
        assert result.exit_code == 0, result.output
        assert "dead 1" in result.output and event_id in result.output
        assert "ConnectError" in result.output
        result = runner.invoke(app, ["outbox", "retry-dead", "--data-dir", str(data_dir)])
        assert result.exit_code == 0 and "1 dead letters queued again" in result.output
    event = row(sessions, event_id)
    assert (event.status, event.attempts) == ("pending", 0)


def test_events_commit_and_roll_back_with_their_cause(sessions) -> None:
    lifecycle = standard_lifecycle(Ledger(BenefitsConfig()))  # as the service wires it
    # Committed: the state change and its event (from the lifecycle listener) together.
    kept = appraisal()
    with sessions() as session, session.begin():
        session.add(kept)
        session.flush()
        lifecycle.emit(session, "appraisal.decided", kept)
        lifecycle.emit(session, "appraisal.finalized", kept)
    # Rolled back: a failure after the change takes its events with it.
    lost = appraisal(member_id="m-2")
    with pytest.raises(RuntimeError), sessions() as session, session.begin():
        session.add(lost)
        session.flush()
        lifecycle.emit(session, "appraisal.finalized", lost)
        record(session, "benefit.consumed", member_id="m-2", appraisal_id=lost.id)
        raise RuntimeError("crash before commit")
    # Gold items (admins' measuring sticks) have no member to tell.
    gold = appraisal(is_gold=True, member_id="gold")
    with sessions() as session, session.begin():
        session.add(gold)
        lifecycle.emit(session, "appraisal.finalized", gold)
    with sessions() as session:
        assert session.get(Appraisal, lost.id) is None
        events = session.scalars(select(OutboxEvent).order_by(OutboxEvent.kind)).all()
    assert [(e.kind, e.appraisal_id) for e in events] == [
        ("appraisal.decided", kept.id),
        ("appraisal.finalized", kept.id),
    ]
    payload = events[1].payload
    assert payload["outcome"] == "authentic" and payload["path"] == "auto"
    assert payload["p_authentic"] == 0.97 and payload["model_version"] == "3"
    assert payload["member_id"] == "m-1" and payload["sla_due_at"]
    assert all(e.status == "pending" and e.attempts == 0 for e in events)
    uuid.UUID(events[0].id, version=4)


def test_several_deliverers_send_each_event_once(sessions, receiver: Receiver) -> None:
    ids = put(sessions, 40)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            while deliver_due(sessions, hooks(receiver.url), batch=5):
                pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sorted(receiver.ids()) == sorted(ids)  # each exactly once: no double claims
    with sessions() as session:
        statuses = session.scalars(select(OutboxEvent.status)).all()
    assert statuses == ["delivered"] * 40


def test_a_deliverer_killed_mid_delivery_sends_again(store, receiver: Receiver) -> None:
    sessions, database_url, data_dir = store
    config = data_dir.parent / "webhooks.yaml"
    config.write_text(
        f"webhooks:\n  - url: {receiver.url}\n    secret_env: TEST_WEBHOOK_SECRET\n"
        "delivery:\n  timeout_seconds: 30\n  lease_seconds: 1\n  backoff_base_seconds: 0.1\n"
    )
    env = dict(os.environ, TEST_WEBHOOK_SECRET=SECRET)
    env.pop("TOUCHSTONE_DATABASE_URL", None)
    env.pop("TOUCHSTONE_WEBHOOKS", None)
    if database_url:
        env["TOUCHSTONE_DATABASE_URL"] = database_url
    args = [TOUCHSTONE, "outbox", "deliver", "--once", "--data-dir", str(data_dir)]
    args += ["--config", str(config)]
    (event_id,) = put(sessions, 1, kind="appraisal.finalized")
    receiver.plan = [("sleep", 30.0, 200)]  # the first POST hangs until the deliverer dies

    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert receiver.arrived.wait(30), process.communicate(timeout=5)[0]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    receiver.release.set()
    event = row(sessions, event_id)
    assert (event.status, event.attempts) == ("pending", 1)  # claimed, never finished
    time.sleep(1.1)  # the dead deliverer's claim runs out

    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "delivered 1" in result.stdout and SECRET not in result.stdout + result.stderr
    event = row(sessions, event_id)
    assert (event.status, event.attempts) == ("delivered", 2)
    assert receiver.ids() == [event_id, event_id]  # at least once: the same id twice
    assert all(s.valid for s in receiver.seen)
    assert list(receiver.processed) == [event_id]  # the receiver dropped the duplicate


def test_service_loop_delivers_until_stopped(sessions, receiver: Receiver) -> None:
    ids = put(sessions, 2)
    config = OutboxConfig(webhooks=hooks(receiver.url), interval_seconds=0.05)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_deliverer(sessions, config, stop))
        for _ in range(200):
            if len(receiver.processed) == 2:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert sorted(receiver.processed) == sorted(ids)


def webhooks_of(path: Path) -> OutboxConfig:
    """The outbox's part of the service's settings, with this webhooks file."""
    return Settings(webhooks_file=path).outbox_config


def test_config_from_file_and_environment(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "webhooks.yaml"
    path.write_text(
        "webhooks:\n  - url: https://members.example/hooks?token=abc\n    secret: from-file\n"
        "delivery:\n  max_attempts: 3\n"
    )
    monkeypatch.delenv("TOUCHSTONE_WEBHOOKS", raising=False)
    config = webhooks_of(path)
    assert config.max_attempts == 3 and config.batch == 100
    assert "from-file" not in repr(config) and "from-file" not in str(config.webhooks)
    assert safe_url(config.webhooks[0].url) == "https://members.example/hooks"
    monkeypatch.setenv(
        "TOUCHSTONE_WEBHOOKS", json.dumps([{"url": "http://a/1", "secret": "x"}] * 2)
    )
    config = webhooks_of(path)
    assert [h.url for h in config.webhooks] == ["http://a/1"] * 2 and config.max_attempts == 3
    monkeypatch.setenv("TOUCHSTONE_WEBHOOKS", json.dumps([{"url": "http://a/1"}]))
    with pytest.raises(ValueError, match="no secret"):
        webhooks_of(path)


def test_the_example_config_loads(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("TOUCHSTONE_WEBHOOKS", raising=False)
    monkeypatch.setenv("TOUCHSTONE_WEBHOOK_SECRET", "from-env")
    example = Path(__file__).resolve().parents[2] / "configs" / "webhooks.example.yaml"
    config = webhooks_of(example)
    assert config.max_attempts == 8 and config.webhooks[0].secret is not None
    assert config.webhooks[0].secret.get_secret_value() == "from-env"


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [
        (None, "sha256=" + "\u00e9" * 64),  # non-ASCII: hmac.compare_digest raises on str
        (None, "sha256=\u0660"),
        ("\u00b2", None),  # a digit to str.isdigit, not to int()
        ("\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660", None),  # Arabic-Indic
        ("", None),
    ],
)
def test_signature_helper_refuses_non_ascii_headers_without_raising(
    timestamp: str | None, signature: str | None
) -> None:
    body = b'{"id":"x"}'
    now = str(int(time.time()))
    headers = {
        "Touchstone-Timestamp": now if timestamp is None else timestamp,
        "Touchstone-Signature": sign(SECRET, now, body) if signature is None else signature,
    }
    assert verify(SECRET, headers, body) is False
