"""Recording events for the membership platform in the caller's transaction, so a state change
and its event commit together or not at all: a crash between "decided" and "notified" loses
nothing. `serving.lifecycle` adds the listeners below, which record the appraisal events."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.db import Appraisal, ErasedMember, OutboxEvent, ReviewTask, iso_utc, utcnow

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
# Events about an appraisal, whose payloads carry the member and what the photos gave (the
# score, the routing reasons that name photo problems). Benefit events are the ledger's, which
# an erasure keeps, so they keep the member.
APPRAISAL_EVENT_KINDS = (
    "appraisal.decided",
    "appraisal.finalized",
    "appraisal.overturned",
    "sla.breached",
)
ERASED_FIELDS = ("member_id", "member_tier", "p_authentic", "reasons")


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
        return iso_utc(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


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
        "created_at": iso_utc(appraisal.created_at),
        "sla_due_at": iso_utc(appraisal.sla_due_at),
        "finalized_at": iso_utc(appraisal.finalized_at),
    }


def _record_appraisal(
    session: Session, kind: str, appraisal: Appraisal, extra: dict[str, Any] | None = None
) -> None:
    if appraisal.is_gold:  # made by admins to measure reviewers: no member to tell
        return
    payload = appraisal_payload(appraisal) | (extra or {})
    member_id: str | None = appraisal.member_id
    if session.get(ErasedMember, appraisal.member_id) is not None:
        # An item still in review when its member was erased: its later events go out scrubbed.
        payload, member_id = scrubbed(payload), None
    record(session, kind, member_id=member_id, appraisal_id=appraisal.id, payload=payload)


def scrubbed(payload: dict[str, Any]) -> dict[str, Any]:
    """An appraisal event's payload without the member and the photos' derived data."""
    kept = {k: v for k, v in payload.items() if k not in ERASED_FIELDS}
    return kept | {"member_erased": True}


def scrub_member_events(session: Session, appraisal_ids: list[str]) -> int:
    """Strip the member from every event about these appraisals (an erasure), in the caller's
    transaction; returns how many events there are (the same when repeated). Events keep their
    id, so a receiver that already has one still drops the resent copy as a duplicate; pending
    and dead ones go out without the member, and delivered ones no longer keep a copy here."""
    count = 0
    for start in range(0, len(appraisal_ids), 500):
        chunk = appraisal_ids[start : start + 500]
        query = select(OutboxEvent).where(
            OutboxEvent.appraisal_id.in_(chunk), OutboxEvent.kind.in_(APPRAISAL_EVENT_KINDS)
        )
        for event in session.scalars(query):
            count += 1
            if event.member_id is not None or "member_erased" not in event.payload:
                event.member_id = None
                event.payload = scrubbed(event.payload)
    return count


def appraisal_listener(kind: str) -> Callable[[Session, Appraisal, dict[str, Any]], None]:
    """A lifecycle listener that records the appraisal's event of this kind (an overturn also
    names the previous outcome)."""

    def listener(session: Session, appraisal: Appraisal, detail: dict[str, Any]) -> None:
        extra = (
            {"previous_outcome": detail.get("previous")} if kind == "appraisal.overturned" else {}
        )
        _record_appraisal(session, kind, appraisal, extra)

    return listener


def record_sla_breach(session: Session, appraisal: Appraisal, detail: dict[str, Any]) -> None:
    """The `sla.breached` listener: the appraisal's event with the task that ran late."""
    extra: dict[str, Any] = {"task_id": detail.get("task"), "breached_at": iso_utc(utcnow())}
    task = session.get(ReviewTask, detail["task"]) if detail.get("task") is not None else None
    if task is not None:
        extra |= {"task_stage": task.stage, "task_due_at": iso_utc(task.due_at)}
    _record_appraisal(session, "sla.breached", appraisal, extra)
