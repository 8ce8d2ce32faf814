"""Events to the membership platform: a transactional outbox, delivered by signed webhooks.

`record` writes an event in the caller's transaction, so a state change and its event commit
together or not at all: a crash between "decided" and "notified" loses nothing. `deliver_due`
later claims due events (on PostgreSQL with `FOR UPDATE SKIP LOCKED`, on SQLite with a
conditional update, so several deliverers can run), POSTs each as JSON to every configured
webhook, signed with HMAC-SHA256, and retries failures with exponential backoff and jitter;
after `max_attempts` tries an event is `dead`, with its last error, until `retry-dead`.

Delivery is at least once: a deliverer killed mid-POST leaves its claim to expire, and the next
run sends the event again. Receivers drop duplicates by `Touchstone-Event-Id`.

A receiver verifies a delivery like this (`secret` is the webhook's secret):

    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, "sha256").hexdigest()
    ok = hmac.compare_digest(f"sha256={expected}", headers["Touchstone-Signature"])
    fresh = abs(time.time() - int(timestamp)) < 300   # refuse replays of old deliveries
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from serving import lifecycle
from serving.db import Appraisal, OutboxEvent, ReviewTask, as_utc, utcnow

log = logging.getLogger("touchstone.outbox")

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "webhooks.yaml"
EVENT_KINDS = (
    "appraisal.decided",
    "appraisal.finalized",
    "appraisal.overturned",
    "benefit.reserved",
    "benefit.consumed",
    "benefit.released",
    "benefit.granted",
    "sla.breached",
    "points.expiring",
)
USER_AGENT = "touchstone-outbox/1"


# -- configuration ----------------------------------------------------------------------------


class Webhook(BaseModel):
    """Where events go and the secret that signs them (`secret`, or `secret_env`: the name of
    an environment variable holding it, so the secret need not live in a file)."""

    model_config = ConfigDict(extra="forbid")

    url: str
    secret: SecretStr | None = None
    secret_env: str | None = None

    @model_validator(mode="after")
    def _resolve_secret(self) -> Webhook:
        if self.secret is None and self.secret_env:
            value = os.environ.get(self.secret_env)
            if not value:
                raise ValueError(f"webhook secret variable {self.secret_env} is not set")
            self.secret = SecretStr(value)
        if self.secret is None or not self.secret.get_secret_value():
            raise ValueError(f"webhook {safe_url(self.url)} has no secret")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"webhook URL must be http(s): {safe_url(self.url)}")
        return self

    def sign(self, timestamp: str, body: bytes) -> str:
        assert self.secret is not None
        return sign(self.secret.get_secret_value(), timestamp, body)


class OutboxConfig(BaseModel):
    """`configs/webhooks.yaml` (`webhooks:` and `delivery:`), or `TOUCHSTONE_WEBHOOKS`."""

    model_config = ConfigDict(extra="forbid")

    webhooks: list[Webhook] = Field(default_factory=list)
    max_attempts: int = Field(8, ge=1)
    backoff_base_seconds: float = Field(2.0, gt=0)  # the wait after try n: base * 2^(n-1)
    backoff_max_seconds: float = Field(3600.0, gt=0)
    jitter: float = Field(0.25, ge=0, le=1)  # waits are cut by up to this share, at random
    timeout_seconds: float = Field(5.0, gt=0)
    batch: int = Field(100, ge=1)
    interval_seconds: float = Field(2.0, gt=0)
    # How long a claim lasts before another deliverer may send the event again (a deliverer
    # killed mid-POST); None: long enough for a whole batch to every webhook.
    lease_seconds: float | None = Field(None, gt=0)


def load_config(path: Path | None = None) -> OutboxConfig:
    """The delivery settings from `path` (default `configs/webhooks.yaml`, if present); the
    webhooks from `TOUCHSTONE_WEBHOOKS` (a JSON list of {url, secret}) when it is set."""
    raw: dict[str, Any] = {}
    source = path or DEFAULT_CONFIG
    if path is not None or source.exists():
        document = yaml.safe_load(source.read_text()) or {}
        raw = {"webhooks": document.get("webhooks") or [], **(document.get("delivery") or {})}
    env = os.environ.get("TOUCHSTONE_WEBHOOKS")
    if env:
        raw["webhooks"] = json.loads(env)
    return OutboxConfig.model_validate(raw)


def safe_url(url: str) -> str:
    """A URL fit for logs: no user info, query or fragment (they may carry tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    *,
    tolerance_seconds: float | None = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver does: check the signature (constant time) and that it is recent."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get("touchstone-timestamp", "")
    signature = lower.get("touchstone-signature", "")
    if not timestamp.isdigit() or not hmac.compare_digest(sign(secret, timestamp, body), signature):
        return False
    if tolerance_seconds is None:
        return True
    return abs((time.time() if now is None else now) - int(timestamp)) <= tolerance_seconds


# -- recording ----------------------------------------------------------------------------------


def record(
    session: Session,
    kind: str,
    *,
    member_id: str | None = None,
    appraisal_id: str | None = None,
    payload: dict[str, Any] | None = None,
) -> OutboxEvent:
    """Write an event in the caller's transaction (it commits or rolls back with its cause)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}; kinds: {', '.join(EVENT_KINDS)}")
    now = utcnow()
    event = OutboxEvent(
        id=str(uuid.uuid4()),
        kind=kind,
        member_id=member_id,
        appraisal_id=appraisal_id,
        payload=json.loads(json.dumps(payload or {}, default=_json_default)),
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(event)
    return event


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return _iso(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()


def appraisal_payload(appraisal: Appraisal) -> dict[str, Any]:
    return {
        "appraisal_id": appraisal.id,
        "member_id": appraisal.member_id,
        "member_tier": appraisal.member_tier,
        "category": appraisal.category,
        "status": appraisal.status,
        "outcome": appraisal.outcome,
        "path": appraisal.path,
        "p_authentic": appraisal.p_authentic,
        "rule": appraisal.rule,
        "reasons": list(appraisal.reasons or []),
        "model_name": appraisal.model_name,
        "model_version": appraisal.model_version,
        "created_at": _iso(appraisal.created_at),
        "sla_due_at": _iso(appraisal.sla_due_at),
        "finalized_at": _iso(appraisal.finalized_at),
    }


def _record_appraisal(
    session: Session, kind: str, appraisal: Appraisal, extra: dict[str, Any] | None = None
) -> None:
    if appraisal.is_gold:  # made by admins to measure reviewers: no member to tell
        return
    payload = appraisal_payload(appraisal) | (extra or {})
    record(session, kind, member_id=appraisal.member_id, appraisal_id=appraisal.id, payload=payload)


@lifecycle.on("appraisal.decided")
def _on_decided(session: Session, appraisal: Appraisal, detail: dict[str, Any]) -> None:
    _record_appraisal(session, "appraisal.decided", appraisal)


@lifecycle.on("appraisal.finalized")
def _on_finalized(session: Session, appraisal: Appraisal, detail: dict[str, Any]) -> None:
    _record_appraisal(session, "appraisal.finalized", appraisal)


@lifecycle.on("appraisal.overturned")
def _on_overturned(session: Session, appraisal: Appraisal, detail: dict[str, Any]) -> None:
    extra = {"previous_outcome": detail.get("previous")}
    _record_appraisal(session, "appraisal.overturned", appraisal, extra)


@lifecycle.on("sla.breached")
def _on_sla_breached(session: Session, appraisal: Appraisal, detail: dict[str, Any]) -> None:
    extra: dict[str, Any] = {"task_id": detail.get("task"), "breached_at": _iso(utcnow())}
    task = session.get(ReviewTask, detail["task"]) if detail.get("task") is not None else None
    if task is not None:
        extra |= {"task_stage": task.stage, "task_due_at": _iso(task.due_at)}
    _record_appraisal(session, "sla.breached", appraisal, extra)


# -- delivery -----------------------------------------------------------------------------------


@dataclass
class DeliveryReport:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0  # failed, another try is scheduled
    dead: int = 0  # failed for the last time
    errors: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.claimed > 0


def envelope(event: OutboxEvent) -> bytes:
    """The JSON body of a delivery (compact, keys sorted: the same bytes on every try)."""
    body = {
        "id": event.id,
        "kind": event.kind,
        "created_at": _iso(event.created_at),
        "member_id": event.member_id,
        "appraisal_id": event.appraisal_id,
        "data": event.payload,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def backoff_seconds(
    attempts: int, base: float, cap: float, jitter: float, rng: random.Random | None = None
) -> float:
    """The wait after the `attempts`-th failed try: base * 2^(attempts-1), capped, then cut
    by up to `jitter` of itself at random so that deliverers do not retry in step."""
    delay = min(cap, base * 2 ** max(attempts - 1, 0))
    return delay * (1 - jitter * (rng or random).random())


def deliver_due(
    sessions: sessionmaker,
    webhooks: Iterable[Webhook],
    *,
    now: dt.datetime | None = None,
    batch: int = 100,
    timeout: float = 5.0,
    max_attempts: int = 8,
    backoff_base: float = 2.0,
    backoff_max: float = 3600.0,
    jitter: float = 0.25,
    lease_seconds: float | None = None,
    client: httpx.Client | None = None,
) -> DeliveryReport:
    """Claim up to `batch` due events and deliver each to every webhook. An event is
    delivered when every webhook answered 2xx; otherwise all are tried again later (receivers
    drop duplicates by event id)."""
    hooks = list(webhooks)
    report = DeliveryReport()
    if not hooks:
        return report
    now = as_utc(now or utcnow())
    lease = lease_seconds or batch * timeout * len(hooks) + 30.0
    claimed = _claim(sessions, now, batch, lease)
    report.claimed = len(claimed)
    if not claimed:
        return report
    own_client = client is None
    http = client or httpx.Client(timeout=timeout, headers={"User-Agent": USER_AGENT})
    try:
        for event in claimed:
            error = _post_all(http, hooks, event, timeout)
            _finish(sessions, event, error, now, max_attempts, (backoff_base, backoff_max, jitter))
            if error is None:
                report.delivered += 1
            else:
                report.errors.append(f"{event.id} ({event.kind}): {error}")
                if event.attempts >= max_attempts:
                    report.dead += 1
                else:
                    report.retried += 1
    finally:
        if own_client:
            http.close()
    return report


def _claim(sessions: sessionmaker, now: dt.datetime, batch: int, lease: float) -> list[OutboxEvent]:
    """Take due events under a lease: `attempts` + 1 and `next_attempt_at` pushed past the
    lease, committed before any POST, so a second deliverer skips them and one killed mid-POST
    hands them on when the lease runs out."""
    until = now + dt.timedelta(seconds=lease)
    with sessions() as session, session.begin():
        query = (
            select(OutboxEvent)
            .where(OutboxEvent.status == "pending", OutboxEvent.next_attempt_at <= now)
            .order_by(OutboxEvent.next_attempt_at, OutboxEvent.created_at)
            .limit(batch)
        )
        postgres = session.get_bind().dialect.name == "postgresql"
        if postgres:
            query = query.with_for_update(skip_locked=True)
        candidates = session.scalars(query).all()
        claimed = []
        for event in candidates:
            # On SQLite another deliverer may have taken it since we read it: only the update
            # that still finds it due wins (writes are serialized).
            taken = session.execute(
                update(OutboxEvent)
                .where(
                    OutboxEvent.id == event.id,
                    OutboxEvent.status == "pending",
                    OutboxEvent.attempts == event.attempts,
                    OutboxEvent.next_attempt_at <= now,
                )
                .values(attempts=OutboxEvent.attempts + 1, next_attempt_at=until)
                .execution_options(synchronize_session=False)
            ).rowcount
            if taken == 1:
                session.expire(event)
                session.refresh(event)
                claimed.append(event)
        for event in claimed:
            session.expunge(event)
        return claimed


def _post_all(
    http: httpx.Client, hooks: list[Webhook], event: OutboxEvent, timeout: float
) -> str | None:
    body = envelope(event)
    errors = []
    for hook in hooks:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Touchstone-Event-Id": event.id,
            "Touchstone-Event-Kind": event.kind,
            "Touchstone-Timestamp": timestamp,
            "Touchstone-Signature": hook.sign(timestamp, body),
            "Touchstone-Attempt": str(event.attempts),
        }
        where = safe_url(hook.url)
        try:
            response = http.post(hook.url, content=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException as exc:
            errors.append(f"{where}: timed out after {timeout:g}s ({type(exc).__name__})")
            continue
        except httpx.HTTPError as exc:
            errors.append(f"{where}: {type(exc).__name__}: {exc}"[:500])
            continue
        if not 200 <= response.status_code < 300:
            text = response.text[:200].replace("\n", " ")
            errors.append(f"{where}: HTTP {response.status_code} {text}".rstrip())
    if errors:
        log.warning("outbox event %s (%s) not delivered: %s", event.id, event.kind, errors)
        return "; ".join(errors)
    return None


def _finish(
    sessions: sessionmaker,
    event: OutboxEvent,
    error: str | None,
    now: dt.datetime,
    max_attempts: int,
    backoff: tuple[float, float, float],
) -> None:
    """Record the outcome of this try, unless the claim was lost meanwhile (its lease ran out
    and another deliverer took the event: its outcome counts)."""
    if error is None:
        values: dict[str, Any] = {"status": "delivered", "delivered_at": utcnow()}
    elif event.attempts >= max_attempts:
        values = {"status": "dead", "last_error": error}
        log.error("outbox event %s (%s) is dead after %d tries", event.id, event.kind, max_attempts)
    else:
        # Count the wait from the end of this try (a slow receiver does not eat the backoff).
        after = max(now, utcnow())
        wait = backoff_seconds(event.attempts, *backoff)
        values = {"next_attempt_at": after + dt.timedelta(seconds=wait), "last_error": error}
    with sessions() as session, session.begin():
        session.execute(
            update(OutboxEvent)
            .where(
                OutboxEvent.id == event.id,
                OutboxEvent.status == "pending",
                OutboxEvent.attempts == event.attempts,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def deliver_with(
    sessions: sessionmaker, config: OutboxConfig, *, now: dt.datetime | None = None
) -> DeliveryReport:
    return deliver_due(
        sessions,
        config.webhooks,
        now=now,
        batch=config.batch,
        timeout=config.timeout_seconds,
        max_attempts=config.max_attempts,
        backoff_base=config.backoff_base_seconds,
        backoff_max=config.backoff_max_seconds,
        jitter=config.jitter,
        lease_seconds=config.lease_seconds,
    )


# -- operations -------------------------------------------------------------------------------


def status(sessions: sessionmaker, dead_limit: int = 50) -> dict[str, Any]:
    """Counts by status, the oldest pending event, and the dead letters with their errors."""
    with sessions() as session:
        counts = Counter(
            dict(
                session.execute(
                    select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)
                ).all()
            )
        )
        oldest = session.scalar(
            select(func.min(OutboxEvent.created_at)).where(OutboxEvent.status == "pending")
        )
        dead = session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.status == "dead")
            .order_by(OutboxEvent.created_at)
            .limit(dead_limit)
        ).all()
        return {
            "counts": {s: counts.get(s, 0) for s in ("pending", "delivered", "dead")},
            "oldest_pending": _iso(oldest),
            "dead": [
                {
                    "id": e.id,
                    "kind": e.kind,
                    "member_id": e.member_id,
                    "appraisal_id": e.appraisal_id,
                    "attempts": e.attempts,
                    "created_at": _iso(e.created_at),
                    "last_error": e.last_error,
                }
                for e in dead
            ],
        }


def retry_dead(sessions: sessionmaker, ids: Iterable[str] | None = None) -> int:
    """Send dead letters again from scratch (all, or those `ids`); returns how many."""
    query = update(OutboxEvent).where(OutboxEvent.status == "dead")
    wanted = list(ids or [])
    if wanted:
        query = query.where(OutboxEvent.id.in_(wanted))
    with sessions() as session, session.begin():
        return session.execute(
            query.values(status="pending", attempts=0, next_attempt_at=utcnow()).execution_options(
                synchronize_session=False
            )
        ).rowcount


async def run_deliverer(
    sessions: sessionmaker,
    settings: Any = None,
    stop_event: asyncio.Event | None = None,
    config: OutboxConfig | None = None,
) -> None:
    """The service's background deliverer: every `interval_seconds`, deliver what is due,
    until `stop_event` is set or the task is cancelled. Without webhooks it does nothing
    (events wait in the outbox, and `touchstone outbox deliver` may send them)."""
    try:
        config = config or load_config()
    except Exception:
        log.exception("the webhook configuration is invalid; events wait in the outbox")
        return
    if not config.webhooks:
        log.info("no webhooks configured; events wait in the outbox")
        return
    stop = stop_event or asyncio.Event()
    while not stop.is_set():
        busy = False
        try:
            report = await asyncio.to_thread(deliver_with, sessions, config)
            busy = report.claimed >= config.batch  # more may be due: go again at once
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("outbox delivery failed; it runs again")
        if busy:
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=config.interval_seconds)
