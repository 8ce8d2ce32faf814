"""An appraisal's state machine: its statuses, the transitions allowed between them, and `move`,
the one place that changes an appraisal's status.

    event                   from                   to
    created                 (new)                  awaiting_photos, in_review, decided
    photos_added            awaiting_photos        awaiting_photos, in_review, decided
    human_review_requested  decided                in_review
    photos_requested        in_review              awaiting_photos
    escalated               in_review              in_review
    finalized               in_review              finalized
    overturned              decided, finalized     finalized

A move checks the table (anything else is refused before a write), then, in the caller's
transaction: writes the status, outcome, path and timestamps; keeps the SLA clock; opens review
tasks on entering review and cancels the open ones on leaving it; records the `AppraisalEvent`
(its kind is the event's name); and announces the lifecycle events listed for the transition
(`serving.lifecycle`: benefits, the outbox and certificates listen). A final verdict that
replaces a different outcome (a person's over the model's) also announces
`appraisal.overturned`.

The SLA clock stops while the ball is in the member's court: entering `awaiting_photos` notes
the time (`sla_paused_at`), and leaving it pushes `sla_due_at` back by the time spent waiting.
Otherwise a member could wait past the SLA before sending their photos and earn the SLA coupon;
and a decision the model takes the moment the photos arrive is never late.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from serving.db import Appraisal, AppraisalEvent, ReviewTask, as_utc, utcnow
from serving.errors import ApiError
from serving.review.tasks import tasks_for

if TYPE_CHECKING:
    from serving.lifecycle import Lifecycle


class Status(StrEnum):
    AWAITING_PHOTOS = "awaiting_photos"  # the member is to send (better) photos; SLA paused
    IN_REVIEW = "in_review"  # people decide
    DECIDED = "decided"  # the model decided alone: final unless a person overturns it
    FINALIZED = "finalized"  # a person's final verdict


@dataclass(frozen=True)
class Transition:
    event: str  # the AppraisalEvent's kind
    source: Status | None  # None: the appraisal is being created
    target: Status
    announces: tuple[str, ...] = ()  # lifecycle events, in order


_DECIDED_ALONE = ("appraisal.decided", "appraisal.finalized")

TRANSITIONS: tuple[Transition, ...] = (
    Transition("created", None, Status.AWAITING_PHOTOS, ("appraisal.created",)),
    Transition("created", None, Status.IN_REVIEW, ("appraisal.created",)),
    Transition("created", None, Status.DECIDED, ("appraisal.created", *_DECIDED_ALONE)),
    Transition("photos_added", Status.AWAITING_PHOTOS, Status.AWAITING_PHOTOS),
    Transition("photos_added", Status.AWAITING_PHOTOS, Status.IN_REVIEW),
    Transition("photos_added", Status.AWAITING_PHOTOS, Status.DECIDED, _DECIDED_ALONE),
    Transition("human_review_requested", Status.DECIDED, Status.IN_REVIEW),
    Transition("photos_requested", Status.IN_REVIEW, Status.AWAITING_PHOTOS),
    Transition("escalated", Status.IN_REVIEW, Status.IN_REVIEW),
    Transition("finalized", Status.IN_REVIEW, Status.FINALIZED, ("appraisal.finalized",)),
    Transition("overturned", Status.DECIDED, Status.FINALIZED, ("appraisal.overturned",)),
    Transition("overturned", Status.FINALIZED, Status.FINALIZED, ("appraisal.overturned",)),
)
_BY_KEY = {(t.event, t.source, t.target): t for t in TRANSITIONS}


class InvalidTransition(ApiError):
    """A move the table does not allow: a 409 `invalid_state` at the HTTP edge."""

    def __init__(self, appraisal_id: str, source: str | None, event: str, target: str) -> None:
        where = f"is {source}" if source else "is new"
        super().__init__(
            409,
            "invalid_state",
            f"appraisal {appraisal_id} {where}; {event!r} cannot take it to {target}",
        )


def allows(source: str | None, event: str) -> bool:
    """Whether an appraisal in `source` may take `event` at all (to any status)."""
    return any(t.event == event and t.source == source for t in TRANSITIONS)


def move(
    session: Session,
    lifecycle: Lifecycle,
    appraisal: Appraisal,
    to: Status,
    *,
    event: str,
    rule: str | None,
    outcome: str | None,
    path: str | None,
    detail: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Take `appraisal` to `to` by `event`, in the caller's transaction (a new appraisal is
    added to the session). Raises `InvalidTransition`, having written nothing, for a move
    outside the table. Other columns (rule, reasons, reviews required, the model's) are the
    caller's to set before the move."""
    source = Status(appraisal.status) if appraisal.status is not None else None
    transition = _BY_KEY.get((event, source, Status(to)))
    if transition is None:
        raise InvalidTransition(appraisal.id, source, event, to)
    now = now or utcnow()
    if source is None:
        session.add(appraisal)
    previous = appraisal.outcome
    appraisal.status, appraisal.outcome, appraisal.path = transition.target.value, outcome, path
    appraisal.updated_at = now
    # When the verdict became final; an overturn keeps the first such time.
    if transition.target is Status.FINALIZED and (
        event != "overturned" or appraisal.finalized_at is None
    ):
        appraisal.finalized_at = now
    _keep_sla_clock(appraisal, source, transition.target, now)
    if source is Status.IN_REVIEW and transition.target is not Status.IN_REVIEW:
        _cancel_open_tasks(session, appraisal.id)
    if transition.target is Status.IN_REVIEW and source is not Status.IN_REVIEW:
        session.add_all(tasks_for(appraisal))  # after the clock: tasks take the due time
    record = {"from": source, "status": transition.target, "outcome": outcome, "path": path}
    session.add(
        AppraisalEvent(
            appraisal_id=appraisal.id,
            kind=event,
            rule=rule,
            detail={k: (v.value if isinstance(v, Status) else v) for k, v in record.items()}
            | (detail or {}),
            created_at=now,
        )
    )
    session.flush()
    for name in transition.announces:
        if name == "appraisal.overturned":
            lifecycle.emit(session, name, appraisal, previous=previous, **_why(detail))
        else:
            lifecycle.emit(session, name, appraisal)
    replaced = previous is not None and previous != outcome
    if transition.target is Status.FINALIZED and event != "overturned" and replaced:
        lifecycle.emit(session, "appraisal.overturned", appraisal, previous=previous)


def _keep_sla_clock(
    appraisal: Appraisal, source: Status | None, target: Status, now: dt.datetime
) -> None:
    waiting = Status.AWAITING_PHOTOS
    if target is waiting and source is not waiting:
        appraisal.sla_paused_at = now
    elif source is waiting and target is not waiting:
        paused = appraisal.sla_paused_at
        if paused is not None:  # None only for rows older than the clock
            appraisal.sla_due_at = as_utc(appraisal.sla_due_at) + (now - as_utc(paused))
        appraisal.sla_paused_at = None


def _cancel_open_tasks(session: Session, appraisal_id: str) -> None:
    """Whatever review was still open for the appraisal is no longer needed."""
    session.execute(
        update(ReviewTask)
        .where(
            ReviewTask.appraisal_id == appraisal_id,
            ReviewTask.status.in_(("open", "claimed")),
        )
        .values(status="cancelled")
        .execution_options(synchronize_session=False)
    )


def _why(detail: dict[str, Any] | None) -> dict[str, Any]:
    reason = (detail or {}).get("reason")
    return {"reason": reason} if reason is not None else {}
