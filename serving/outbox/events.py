"""Recording events for the membership platform in the caller's transaction, so a state change
and its event commit together or not at all: a crash between "decided" and "notified" loses
nothing. `serving.lifecycle` adds the listeners below, which record the appraisal events."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from serving.db import Appraisal, OutboxEvent, ReviewTask, iso_utc, utcnow

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
    record(session, kind, member_id=appraisal.member_id, appraisal_id=appraisal.id, payload=payload)


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
