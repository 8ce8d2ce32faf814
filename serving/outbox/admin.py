"""Looking after the outbox: counts, the oldest pending event, dead letters and their errors;
sending dead letters again."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import sessionmaker

from serving.db import OutboxEvent, iso_utc, utcnow


def status(sessions: sessionmaker, dead_limit: int = 50) -> dict[str, Any]:
    """Counts by status, the oldest pending event, and the dead letters with their errors."""
    with sessions() as session:
        counts = Counter(
            dict(
                session.execute(
                    select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)
                ).all()
            )
        )
        oldest = session.scalar(
            select(func.min(OutboxEvent.created_at)).where(OutboxEvent.status == "pending")
        )
        dead = session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.status == "dead")
            .order_by(OutboxEvent.created_at)
            .limit(dead_limit)
        ).all()
        return {
            "counts": {s: counts.get(s, 0) for s in ("pending", "delivered", "dead")},
            "oldest_pending": iso_utc(oldest),
            "dead": [
                {
                    "id": e.id,
                    "kind": e.kind,
                    "member_id": e.member_id,
                    "appraisal_id": e.appraisal_id,
                    "attempts": e.attempts,
                    "created_at": iso_utc(e.created_at),
                    "last_error": e.last_error,
                }
                for e in dead
            ],
        }


def retry_dead(sessions: sessionmaker, ids: Iterable[str] | None = None) -> int:
    """Send dead letters again from scratch (all, or those `ids`); returns how many."""
    query = update(OutboxEvent).where(OutboxEvent.status == "dead")
    wanted = list(ids or [])
    if wanted:
        query = query.where(OutboxEvent.id.in_(wanted))
    with sessions() as session, session.begin():
        return session.execute(
            query.values(status="pending", attempts=0, next_attempt_at=utcnow()).execution_options(
                synchronize_session=False
            )
        ).rowcount
