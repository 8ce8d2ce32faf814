"""Month close and points expiry: the ledger's scheduled work (`touchstone benefits
close-month` and `expire-points`, and the service's hourly sweep). Each member is one short
transaction, so a long run never holds a lock for long, and a second run changes nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from serving.benefits.ledger import Ledger, balance, closed, parse_month
from serving.benefits.tiers import tier_of_month
from serving.db import Member, iso_utc


class MonthNotOver(ValueError):
    """Closing a month that has not ended yet (in the members' time zone)."""


@dataclass
class Expiries:
    members: int = 0
    points_expired: int = 0
    expiry_reminders: int = 0


@dataclass
class MonthClose(Expiries):
    month: str = ""
    closed_now: int = 0
    free_appraisals_banked: int = 0
    points_banked: int = 0


def close_month(
    sessions: sessionmaker,
    ledger: Ledger,
    month: str,
    now: dt.datetime | None = None,
    member_ids: Iterable[str] | None = None,
) -> MonthClose:
    """Bank each member's unused free appraisals of `month` (YYYY-MM, else InvalidMonth) as
    points, with the tier they held at the month's end; safe to run twice (a member's close is
    one entry keyed by member and month, the month as parsed). Also posts due point expiries."""
    month = parse_month(month)
    now = now or ledger.clock()
    _, end = ledger.month_bounds(month)
    if now < end:
        raise MonthNotOver(f"{month} ends at {iso_utc(end)}; it cannot be closed before")
    totals = MonthClose(month=month)
    for member_id in _members(sessions, member_ids, joined_before=end):
        with sessions() as session, session.begin():
            ledger.lock_member(session, member_id)
            _count_expiries(totals, *ledger.expire_points(session, member_id, now))
            if closed(session, member_id, month):
                continue
            # A member who never needed this month's quota still had it.
            ledger.ensure_quota(session, member_id, month, tier_of_month(session, member_id, end))
            unused = max(0, balance(session, member_id, "free_appraisal", month))
            ledger.post(
                session,
                member_id,
                "free_appraisal",
                -unused,
                "month_close",
                f"member:{member_id}:close:{month}",
                month=month,
                event=None,
            )
            points = unused * ledger.config.bank_points_per_free_appraisal
            ledger.credit_points(
                session,
                member_id,
                points,
                "bank",
                f"member:{member_id}:bank:{month}",
                detail={"month": month, "free_appraisals": unused},
            )
            totals.closed_now += 1
            totals.free_appraisals_banked += unused
            totals.points_banked += points
    return totals


def expire_points(
    sessions: sessionmaker,
    ledger: Ledger,
    now: dt.datetime | None = None,
    member_ids: Iterable[str] | None = None,
) -> Expiries:
    """Post due point expiries and reminders for every member (safe to run often)."""
    now = now or ledger.clock()
    totals = Expiries()
    for member_id in _members(sessions, member_ids):
        with sessions() as session, session.begin():
            ledger.lock_member(session, member_id)
            _count_expiries(totals, *ledger.expire_points(session, member_id, now))
    return totals


def _members(
    sessions: sessionmaker,
    member_ids: Iterable[str] | None,
    joined_before: dt.datetime | None = None,
) -> list[str]:
    query = select(Member.id).order_by(Member.id)
    if joined_before is not None:
        query = query.where(Member.created_at < joined_before)
    if member_ids is not None:
        query = query.where(Member.id.in_(list(member_ids)))
    with sessions() as session:
        return list(session.scalars(query))


def _count_expiries(totals: Expiries, expired: int, reminded: int) -> None:
    totals.members += 1
    totals.points_expired += expired
    totals.expiry_reminders += reminded
