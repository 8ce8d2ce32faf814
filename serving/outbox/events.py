"""Recording events for the membership platform in the caller's transaction, so a state change
and its event commit together or not at all: a crash between "decided" and "notified" loses
nothing. Listeners on the appraisal lifecycle record the appraisal events."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from sqlalchemy.orm import Session

from serving import lifecycle
from serving.db import Appraisal, OutboxEvent, ReviewTask, as_utc, utcnow

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
