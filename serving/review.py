"""The human review queue: tasks, leases, verdicts, double review and escalation.

Anchors: Label Studio's task locks (a claim is a lease that runs out), Prodigy's routing (the
next task by priority), CVAT's stages (review, double review, senior escalation), A2I (human
loops over model output). Tasks are served earliest SLA deadline first, so higher tiers (shorter
SLAs) come first without starving anyone. On PostgreSQL a claim locks its row with
`FOR UPDATE SKIP LOCKED`, so concurrent reviewers never wait on each other; on every database the
claim is a conditional UPDATE, so two reviewers can never both win one task.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from serving import lifecycle
from serving.auth import Caller
from serving.db import (
    Appraisal,
    AppraisalEvent,
    AuditEntry,
    Photo,
    ReviewTask,
    Verdict,
    as_utc,
    utcnow,
)
from serving.errors import ApiError

OUTCOMES = ("authentic", "counterfeit", "inconclusive", "needs_more_photos")
FINAL_OUTCOMES = ("authentic", "counterfeit", "inconclusive")
# Rounds of "send better photos" (by the policy or a reviewer) before people settle the item.
MAX_PHOTO_ROUNDS = 3


def tasks_for(appraisal: Appraisal) -> list[ReviewTask]:
    """The review tasks an appraisal routed to people needs: one, or two blind ones."""
    double = appraisal.reviews_required >= 2
    return [
        ReviewTask(
            appraisal_id=appraisal.id,
            stage="double" if double else "review",
            required_role="reviewer",
            blind=double,
            status="open",
            due_at=appraisal.sla_due_at,
        )
        for _ in range(2 if double else 1)
    ]


def mask_member(member_id: str) -> str:
    """Reviewers see members masked (PIPL): enough to tell two apart on one page, no more."""
    if len(member_id) <= 4:
        return member_id[:1] + "***"
    return member_id[:2] + "***" + member_id[-2:]


@dataclass(frozen=True)
class VerdictIn:
    outcome: str
    notes: str
    findings: list[dict[str, Any]]


class ReviewService:
    def __init__(self, sessions: sessionmaker, lease_seconds: float, blind_scores: bool = True):
        self.sessions = sessions
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.blind_scores = blind_scores

    # -- claiming ----------------------------------------------------------------------------

    def claim(self, caller: Caller) -> int | None:
        """The caller's task: one they already hold, else the next due one; None if none."""
        roles = ("reviewer", "senior") if caller.role == "senior" else ("reviewer",)
        for _ in range(10):  # lost races are retried; each attempt is one short transaction
            now = utcnow()
            with self.sessions() as session, session.begin():
                held = session.scalar(
                    select(ReviewTask.id)
                    .where(
                        ReviewTask.claimed_by == caller.key_id,
                        ReviewTask.status == "claimed",
                        ReviewTask.lease_expires_at > now,
                    )
                    .order_by(ReviewTask.due_at)
                    .limit(1)
                )
                if held is not None:
                    return held
                candidate = self._next(session, caller, roles, now)
                if candidate is None:
                    return None
                won = session.execute(
                    update(ReviewTask)
                    .where(ReviewTask.id == candidate, _claimable(now))
                    .values(
                        status="claimed",
                        claimed_by=caller.key_id,
                        claimed_at=now,
                        lease_expires_at=now + self.lease,
                    )
                    .execution_options(synchronize_session=False)
                )
                if won.rowcount == 1:
                    task = session.get(ReviewTask, candidate)
                    assert task is not None
                    session.add(
                        AuditEntry(
                            actor=caller.key_id,
                            action="claim",
                            appraisal_id=task.appraisal_id,
                            detail={"task": task.id},
                        )
                    )
                    return candidate
        return None

    def _next(
        self, session: Session, caller: Caller, roles: tuple[str, ...], now: dt.datetime
    ) -> int | None:
        other = aliased(ReviewTask)
        # Two reviews of one item must come from two people, and its senior must be a third.
        took_part = exists().where(
            other.appraisal_id == ReviewTask.appraisal_id,
            other.id != ReviewTask.id,
            other.claimed_by == caller.key_id,
            other.stage.in_(("double", "escalation")),
            other.status.in_(("claimed", "done")),
        )
        query = (
            select(ReviewTask.id)
            .where(
                ReviewTask.required_role.in_(roles),
                _claimable(now),
                or_(ReviewTask.stage == "review", ~took_part),
            )
            .order_by(ReviewTask.due_at, ReviewTask.id)
            .limit(1)
        )
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=ReviewTask)
        return session.scalar(query)

    def heartbeat(self, caller: Caller, task_id: int) -> dt.datetime:
        with self.sessions() as session, session.begin():
            task = self._held(session, caller, task_id)
            task.lease_expires_at = utcnow() + self.lease
            return task.lease_expires_at

    def release(self, caller: Caller, task_id: int) -> None:
        with self.sessions() as session, session.begin():
            task = self._held(session, caller, task_id)
            task.status, task.claimed_by, task.lease_expires_at = "open", None, None
            session.add(
                AuditEntry(
                    actor=caller.key_id,
                    action="release",
                    appraisal_id=task.appraisal_id,
                    detail={"task": task.id},
                )
            )

    def _held(self, session: Session, caller: Caller, task_id: int) -> ReviewTask:
        task = session.get(ReviewTask, task_id, with_for_update=True)
        if task is None:
            raise ApiError(404, "not_found", f"no review task {task_id}")
        if task.status != "claimed" or task.claimed_by != caller.key_id:
            raise ApiError(
                409,
                "lease_lost",
                f"task {task_id} is not held by you (its lease ran out or it is finished); "
                "claim again",
            )
        return task

    # -- verdicts ----------------------------------------------------------------------------

    def verdict(self, caller: Caller, task_id: int, verdict: VerdictIn) -> str:
        """Record a verdict; return the appraisal's id."""
        if verdict.outcome not in OUTCOMES:
            raise ApiError(422, "invalid_field", f"outcome must be one of {', '.join(OUTCOMES)}")
        with self.sessions() as session, session.begin():
            task = self._held(session, caller, task_id)
            appraisal = session.get(Appraisal, task.appraisal_id, with_for_update=True)
            assert appraisal is not None
            now = utcnow()
            session.add(
                Verdict(
                    task_id=task.id,
                    appraisal_id=appraisal.id,
                    reviewer=caller.key_id,
                    outcome=verdict.outcome,
                    notes=verdict.notes,
                    findings=verdict.findings,
                    created_at=now,
                )
            )
            task.status, task.done_at = "done", now
            session.add(
                AuditEntry(
                    actor=caller.key_id,
                    action="verdict",
                    appraisal_id=appraisal.id,
                    detail={"task": task.id, "stage": task.stage, "outcome": verdict.outcome},
                )
            )
            session.flush()
            self._progress(session, appraisal, task, verdict, now)
            return appraisal.id

    def _progress(
        self,
        session: Session,
        appraisal: Appraisal,
        task: ReviewTask,
        verdict: VerdictIn,
        now: dt.datetime,
    ) -> None:
        if task.stage != "double":
            self._apply(session, appraisal, verdict.outcome, task.stage, now)
            return
        # The current pair: after more photos a new pair of tasks is made.
        pair = session.scalars(
            select(ReviewTask)
            .where(ReviewTask.appraisal_id == appraisal.id, ReviewTask.stage == "double")
            .order_by(ReviewTask.id.desc())
            .limit(2)
        ).all()
        if len(pair) < 2 or any(t.status != "done" for t in pair):
            return  # the other reviewer has not answered yet
        outcomes = [
            session.scalar(select(Verdict.outcome).where(Verdict.task_id == t.id)) for t in pair
        ]
        if outcomes[0] == outcomes[1]:
            self._apply(session, appraisal, outcomes[0], "double", now)
            return
        session.add(
            ReviewTask(
                appraisal_id=appraisal.id,
                stage="escalation",
                required_role="senior",
                blind=False,
                status="open",
                due_at=appraisal.sla_due_at,
            )
        )
        session.add(
            AppraisalEvent(
                appraisal_id=appraisal.id,
                kind="escalated",
                rule="reviewers_disagree",
                detail={"outcomes": list(outcomes)},
            )
        )

    def _apply(
        self, session: Session, appraisal: Appraisal, outcome: str, stage: str, now: dt.datetime
    ) -> None:
        # Whatever else was open for this appraisal is no longer needed.
        session.execute(
            update(ReviewTask)
            .where(
                ReviewTask.appraisal_id == appraisal.id,
                ReviewTask.status.in_(("open", "claimed")),
            )
            .values(status="cancelled")
            .execution_options(synchronize_session=False)
        )
        if outcome == "needs_more_photos" and appraisal.photo_rounds >= MAX_PHOTO_ROUNDS:
            outcome = "inconclusive"
            appraisal.reasons = [
                *appraisal.reasons,
                f"still no usable photos after {MAX_PHOTO_ROUNDS} rounds: inconclusive",
            ]
        if outcome == "needs_more_photos":
            appraisal.status, appraisal.outcome = "awaiting_photos", None
            appraisal.rule = "reviewer_needs_more_photos"
            appraisal.reasons = [*appraisal.reasons, "a reviewer asked for more photos"]
            kind = "photos_requested"
        else:
            # Set only when an earlier verdict stood (the model's, before the member asked for
            # a person); routed items carry no outcome until their verdict.
            previous = appraisal.outcome
            appraisal.status, appraisal.outcome, appraisal.path = "finalized", outcome, "human"
            appraisal.finalized_at = now
            kind = "finalized"
        appraisal.updated_at = now
        session.add(
            AppraisalEvent(
                appraisal_id=appraisal.id,
                kind=kind,
                rule=f"{stage}_verdict",
                detail={"outcome": outcome},
            )
        )
        if kind == "finalized":
            session.flush()
            lifecycle.emit(session, "appraisal.finalized", appraisal)
            if previous is not None and previous != outcome:
                # A person changed what the model had decided alone (the member asked).
                lifecycle.emit(session, "appraisal.overturned", appraisal, previous=previous)

    # -- what a reviewer sees ----------------------------------------------------------------

    def view(self, caller: Caller, task_id: int) -> dict[str, Any]:
        """The work page's data. Blind tasks hide the model's scores and every other verdict;
        an escalation shows the senior both verdicts. Logged: a view of a member's photos."""
        with self.sessions() as session, session.begin():
            task = session.get(ReviewTask, task_id)
            if task is None:
                raise ApiError(404, "not_found", f"no review task {task_id}")
            if caller.role not in ("senior", "admin") and task.claimed_by != caller.key_id:
                raise ApiError(403, "forbidden", "claim this task to see it")
            appraisal = session.get(Appraisal, task.appraisal_id)
            assert appraisal is not None
            photos = session.scalars(
                select(Photo).where(Photo.appraisal_id == appraisal.id).order_by(Photo.id)
            ).all()
            hide_scores = task.blind and self.blind_scores
            others = []
            if task.stage == "escalation":
                others = [
                    {"outcome": v.outcome, "notes": v.notes, "findings": v.findings}
                    for v in session.scalars(
                        select(Verdict).where(
                            Verdict.appraisal_id == appraisal.id, Verdict.task_id != task.id
                        )
                    )
                ]
            session.add(
                AuditEntry(
                    actor=caller.key_id,
                    action="view_photos",
                    appraisal_id=appraisal.id,
                    detail={"task": task.id, "photos": len(photos)},
                )
            )
            now = utcnow()
            due = as_utc(task.due_at)
            return {
                "task": {
                    "id": task.id,
                    "stage": task.stage,
                    "blind": task.blind,
                    "status": task.status,
                    "due_at": due,
                    "overdue": due is not None and due < now,
                    "lease_expires_at": as_utc(task.lease_expires_at),
                },
                "appraisal": {
                    "id": appraisal.id,
                    "member": mask_member(appraisal.member_id),
                    "member_tier": appraisal.member_tier,
                    "category": appraisal.category,
                    "brand": appraisal.brand,
                    "declared_value": appraisal.declared_value_cny,
                    "photo_rounds": appraisal.photo_rounds,
                    "routed_because": appraisal.reasons,
                    "p_authentic": None if hide_scores else appraisal.p_authentic,
                },
                "photos": [
                    {
                        "sha256": p.sha256,
                        "region": p.region,
                        "round": p.round,
                        "usable": p.usable,
                        "problems": p.problems,
                        "score": None if hide_scores else p.p_authentic,
                    }
                    for p in photos
                ],
                "other_verdicts": others,
            }

    def photo_allowed(self, caller: Caller, task_id: int, sha256: str) -> str:
        """Check the caller may see this photo through this task; log the view."""
        with self.sessions() as session, session.begin():
            task = session.get(ReviewTask, task_id)
            if task is None:
                raise ApiError(404, "not_found", f"no review task {task_id}")
            if caller.role not in ("senior", "admin") and task.claimed_by != caller.key_id:
                raise ApiError(403, "forbidden", "claim this task to see its photos")
            found = session.scalar(
                select(Photo.id).where(
                    Photo.appraisal_id == task.appraisal_id, Photo.sha256 == sha256
                )
            )
            if found is None:
                raise ApiError(404, "not_found", "no such photo in this task")
            session.add(
                AuditEntry(
                    actor=caller.key_id,
                    action="view_photo",
                    appraisal_id=task.appraisal_id,
                    detail={"task": task.id, "sha256": sha256},
                )
            )
            return task.appraisal_id

    def queue(self) -> dict[str, int]:
        """Open tasks by SLA state: on time, due within 2 hours, overdue; and claimed ones."""
        now = utcnow()
        with self.sessions() as session:

            def count(*conditions: Any) -> int:
                return int(
                    session.scalar(select(func.count(ReviewTask.id)).where(*conditions)) or 0
                )

            waiting = or_(ReviewTask.status == "open", expired_lease(now))
            return {
                "open": count(waiting),
                "on_time": count(waiting, ReviewTask.due_at >= now + dt.timedelta(hours=2)),
                "due_soon": count(
                    waiting,
                    ReviewTask.due_at >= now,
                    ReviewTask.due_at < now + dt.timedelta(hours=2),
                ),
                "overdue": count(waiting, ReviewTask.due_at < now),
                "claimed": count(
                    ReviewTask.status == "claimed", ReviewTask.lease_expires_at >= now
                ),
                "escalations": count(waiting, ReviewTask.stage == "escalation"),
            }

    def quality(self) -> dict[str, Any]:
        from serving.quality import quality_numbers  # it imports this module

        with self.sessions() as session:
            return quality_numbers(session, utcnow())

    def flag_sla_breaches(self) -> tuple[int, int]:
        """Flag tasks past their due time (one `sla_breached` event each, once); return the
        number newly flagged and the number of tasks open longer than 72 hours."""
        now = utcnow()
        with self.sessions() as session, session.begin():
            late = session.scalars(
                select(ReviewTask).where(
                    ReviewTask.status.in_(("open", "claimed")),
                    ReviewTask.due_at < now,
                    ReviewTask.sla_breached_at.is_(None),
                )
            ).all()
            for task in late:
                task.sla_breached_at = now
                appraisal = session.get(Appraisal, task.appraisal_id)
                assert appraisal is not None
                lifecycle.emit(session, "sla.breached", appraisal, task=task.id)
                session.add(
                    AppraisalEvent(
                        appraisal_id=task.appraisal_id,
                        kind="sla_breached",
                        rule="sla",
                        detail={"task": task.id, "due_at": as_utc(task.due_at).isoformat()},
                    )
                )
            stale = session.scalar(
                select(func.count(ReviewTask.id)).where(
                    ReviewTask.status.in_(("open", "claimed")),
                    ReviewTask.created_at < now - dt.timedelta(hours=72),
                )
            )
        return len(late), int(stale or 0)


def expired_lease(now: dt.datetime) -> Any:
    return and_(ReviewTask.status == "claimed", ReviewTask.lease_expires_at < now)


def _claimable(now: dt.datetime) -> Any:
    return or_(ReviewTask.status == "open", expired_lease(now))
