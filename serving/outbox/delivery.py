"""Delivering due events: claim them under a lease (on PostgreSQL with `FOR UPDATE SKIP
LOCKED`, on SQLite with a conditional update, so several deliverers can run), POST each as JSON
to every webhook, signed with HMAC-SHA256, and retry failures with exponential backoff and
jitter; after `max_attempts` tries an event is `dead`, with its last error, until `retry-dead`.

Delivery is at least once: a deliverer killed mid-POST leaves its claim to expire, and the next
run sends the event again. Receivers drop duplicates by `Touchstone-Event-Id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import sessionmaker

from serving.db import OutboxEvent, as_utc, iso_utc, utcnow
from serving.outbox.config import OutboxConfig, Webhook, safe_url

log = logging.getLogger("touchstone.outbox")
USER_AGENT = "touchstone-outbox/1"


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
        "created_at": iso_utc(event.created_at),
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


async def run_deliverer(
    sessions: sessionmaker, config: OutboxConfig, stop_event: asyncio.Event | None = None
) -> None:
    """The service's background deliverer: every `interval_seconds`, deliver what is due,
    until `stop_event` is set or the task is cancelled. Without webhooks it does nothing
    (events wait in the outbox, and `touchstone outbox deliver` may send them)."""
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
