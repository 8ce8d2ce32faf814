"""What the web pages read beyond `ReviewService`: read-only, never a write (every write goes
through the service, which keeps the audit log)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from serving.appraisals.status import Status
from serving.db import Appraisal, Photo, ReviewTask, Verdict, utcnow


def holds(sessions: sessionmaker, task_id: int, key_id: int) -> bool:
    """Whether this reviewer holds the task now (claimed by them, not yet decided)."""
    with sessions() as db:
        task = db.get(ReviewTask, task_id)
    return task is not None and task.status == "claimed" and task.claimed_by == key_id


def photo_in_task(sessions: sessionmaker, task_id: int, sha256: str) -> tuple[bool, str] | None:
    """(the task is blind, the photo's region), or None if either is unknown."""
    with sessions() as db:
        task = db.get(ReviewTask, task_id)
        if task is None:
            return None
        region = db.scalar(
            select(Photo.region).where(
                Photo.appraisal_id == task.appraisal_id, Photo.sha256 == sha256
            )
        )
    return None if region is None else (task.blind, region)


@dataclass(frozen=True)
class PastVerdict:
    appraisal_id: str
    category: str
    brand: str | None
    stage: str
    outcome: str
    final_outcome: str | None  # the item's outcome now, which may differ from this verdict
    at: dt.datetime


@dataclass(frozen=True)
class History:
    verdicts: list[PastVerdict]
    today: int
    this_week: int
    total: int


def history(sessions: sessionmaker, key_id: int, limit: int = 100) -> History:
    """A reviewer's own verdicts, newest first, and counts since midnight and Monday (UTC)."""
    now = utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    monday = midnight - dt.timedelta(days=midnight.weekday())
    with sessions() as db:
        rows = db.execute(
            select(Verdict, Appraisal, ReviewTask.stage)
            .join(Appraisal, Appraisal.id == Verdict.appraisal_id)
            .join(ReviewTask, ReviewTask.id == Verdict.task_id)
            .where(Verdict.reviewer == key_id)
            .order_by(Verdict.created_at.desc(), Verdict.id.desc())
            .limit(limit)
        ).all()

        def count_since(start: dt.datetime | None) -> int:
            query = select(func.count(Verdict.id)).where(Verdict.reviewer == key_id)
            if start is not None:
                query = query.where(Verdict.created_at >= start)
            return int(db.scalar(query) or 0)

        counts = count_since(midnight), count_since(monday), count_since(None)
    verdicts = [
        PastVerdict(
            appraisal_id=appraisal.id,
            category=appraisal.category,
            brand=appraisal.brand,
            stage=stage,
            outcome=verdict.outcome,
            final_outcome=appraisal.outcome if appraisal.status == Status.FINALIZED else None,
            at=verdict.created_at,
        )
        for verdict, appraisal, stage in rows
    ]
    return History(verdicts, *counts)
