"""Submissions per member, limited: the outcome of an appraisal is itself a signal, so a
counterfeiter must not be able to re-shoot an item without end until it passes.

Counted from the database (the member's appraisals created in the last hour, whichever key
sent them), so the limit holds across processes and restarts. Two submissions racing for the
last place may both pass: the limit is a brake, not an invoice.
"""

from __future__ import annotations

import datetime as dt
import math

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from serving.db import Appraisal, as_utc, utcnow
from serving.errors import ApiError

WINDOW = dt.timedelta(hours=1)


def check_submission_rate(
    sessions: sessionmaker,
    member_id: str,
    per_hour: int,
    idempotency_key: str | None,
    now: dt.datetime | None = None,
) -> None:
    """429 `rate_limited` (with Retry-After) when the member has made `per_hour` submissions
    within the hour. A retry of an upload already taken (its idempotency key is known) is no
    new submission: the service replays it."""
    now = now or utcnow()
    with sessions() as session:
        if idempotency_key and session.scalar(
            select(Appraisal.id).where(Appraisal.idempotency_key == idempotency_key)
        ):
            return
        recent = session.scalars(
            select(Appraisal.created_at)
            .where(Appraisal.member_id == member_id, Appraisal.created_at > now - WINDOW)
            .order_by(Appraisal.created_at.desc())
            .limit(per_hour)
        ).all()
    if len(recent) < per_hour:
        return
    # A place frees when the oldest of the last `per_hour` leaves the window.
    wait = (as_utc(recent[-1]) + WINDOW - now).total_seconds()
    raise ApiError(
        429,
        "rate_limited",
        f"at most {per_hour} submissions per member in an hour; try again later",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )
