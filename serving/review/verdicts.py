"""A reviewer's verdict and what follows it: a single review finalizes the item (or sends it
back for photos); a double review waits for its pair, finalizes when the two agree and opens a
senior's escalation when they do not. Runs in the caller's transaction."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.appraisals.status import Status, move
from serving.auth import Caller
from serving.db import Appraisal, AuditEntry, ReviewTask, Verdict
from serving.lifecycle import Lifecycle
from serving.review.tasks import MAX_PHOTO_ROUNDS, REVIEWER_ASKED_FOR_PHOTOS, VerdictIn


def record_verdict(
    session: Session,
    lifecycle: Lifecycle,
    caller: Caller,
    task: ReviewTask,
    appraisal: Appraisal,
    verdict: VerdictIn,
    now: dt.datetime,
) -> None:
    """Store the verdict on a task the caller holds, close the task, and move the item on."""
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
    _progress(session, lifecycle, appraisal, task, verdict, now)


def _progress(
    session: Session,
    lifecycle: Lifecycle,
    appraisal: Appraisal,
    task: ReviewTask,
    verdict: VerdictIn,
    now: dt.datetime,
) -> None:
    if task.stage != "double":
        _apply(session, lifecycle, appraisal, verdict.outcome, task.stage, now)
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
        _apply(session, lifecycle, appraisal, outcomes[0], "double", now)
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
    move(
        session,
        lifecycle,
        appraisal,
        Status.IN_REVIEW,
        event="escalated",
        rule="reviewers_disagree",
        outcome=appraisal.outcome,
        path=appraisal.path,
        detail={"outcomes": list(outcomes)},
        now=now,
    )


def _apply(
    session: Session,
    lifecycle: Lifecycle,
    appraisal: Appraisal,
    outcome: str,
    stage: str,
    now: dt.datetime,
) -> None:
    """Send the item back for photos, or finalize it; the move closes the review tasks still
    open."""
    if outcome == "needs_more_photos" and appraisal.photo_rounds >= MAX_PHOTO_ROUNDS:
        outcome = "inconclusive"
        appraisal.reasons = [
            *appraisal.reasons,
            f"still no usable photos after {MAX_PHOTO_ROUNDS} rounds: inconclusive",
        ]
    asked = outcome == "needs_more_photos"
    if asked:
        appraisal.rule = REVIEWER_ASKED_FOR_PHOTOS
        appraisal.reasons = [*appraisal.reasons, "a reviewer asked for more photos"]
    # A person's verdict over the model's (the member asked for a person) is announced as an
    # overturn too, by the move.
    move(
        session,
        lifecycle,
        appraisal,
        Status.AWAITING_PHOTOS if asked else Status.FINALIZED,
        event="photos_requested" if asked else "finalized",
        rule=f"{stage}_verdict",
        outcome=None if asked else outcome,
        path=appraisal.path if asked else "human",
        detail={"outcome": outcome},
        now=now,
    )
