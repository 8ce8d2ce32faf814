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
from typing import Any

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from serving.auth import Caller
from serving.db import Appraisal, AppraisalEvent, AuditEntry, ReviewTask, as_utc, utcnow
from serving.errors import ApiError
from serving.lifecycle import Lifecycle
from serving.review.quality import quality_numbers
from serving.review.tasks import OUTCOMES, VerdictIn, claimable
from serving.review.verdicts import record_verdict
from serving.review.view import check_photo_access, task_view
from serving.schemas.review import QueueCounts, ReviewQuality, TaskView


class ReviewService:
    def __init__(
        self,
        sessions: sessionmaker,
        lifecycle: Lifecycle,
        lease_seconds: float,
        blind_scores: bool = True,
    ) -> None:
        self.sessions = sessions
        self.lifecycle = lifecycle
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
                    .where(ReviewTask.id == candidate, claimable(now))
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
                claimable(now),
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
            record_verdict(session, self.lifecycle, caller, task, appraisal, verdict, utcnow())
            return appraisal.id

    # -- what a reviewer sees ----------------------------------------------------------------

    def view(self, caller: Caller, task_id: int) -> TaskView:
        """The work page's data (`view.task_view`); the view is logged."""
        with self.sessions() as session, session.begin():
            return task_view(session, caller, task_id, self.blind_scores)

    def photo_allowed(self, caller: Caller, task_id: int, sha256: str) -> str:
        """Check the caller may see this photo through this task; log the view."""
        with self.sessions() as session, session.begin():
            return check_photo_access(session, caller, task_id, sha256)

    def queue(self) -> QueueCounts:
        """Open tasks by SLA state: on time, due within 2 hours, overdue; and claimed ones."""
        now = utcnow()
        with self.sessions() as session:

            def count(*conditions: Any) -> int:
                return int(
                    session.scalar(select(func.count(ReviewTask.id)).where(*conditions)) or 0
                )

            waiting = claimable(now)
            soon = now + dt.timedelta(hours=2)
            return QueueCounts(
                open=count(waiting),
                on_time=count(waiting, ReviewTask.due_at >= soon),
                due_soon=count(waiting, ReviewTask.due_at >= now, ReviewTask.due_at < soon),
                overdue=count(waiting, ReviewTask.due_at < now),
                claimed=count(ReviewTask.status == "claimed", ReviewTask.lease_expires_at >= now),
                escalations=count(waiting, ReviewTask.stage == "escalation"),
            )

    def quality(self) -> ReviewQuality:
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
                self.lifecycle.emit(session, "sla.breached", appraisal, task=task.id)
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
