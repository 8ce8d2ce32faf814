"""A member's tier: what the membership platform set (`PUT /v1/members/{id}`), with its history
(`member_tiers`), so that every question about a tier has one answer.

- The tier *now* decides a submission's price, SLA and routing; a form that claims another is
  refused (the appraisal route), and a member never announced is an explorer.
- The tier *of a month* is the tier held at the month's last moment (in the members' time
  zone): month close grants that tier's quota (topped up, never taken back, as during the
  month) and banks what is left. A tier set after the month ended never reaches back into it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from serving.db import MemberTier
from touchstone.vocabulary import DEFAULT_TIER


def tier_at(session: Session, member_id: str, when: dt.datetime) -> str:
    """The tier the member held at `when`: the last one set at or before it; else explorer."""
    return _last(session, member_id, MemberTier.effective_from <= when)


def tier_of_month(session: Session, member_id: str, month_end: dt.datetime) -> str:
    """The tier held at the end of the month that ends (exclusive) at `month_end`."""
    return _last(session, member_id, MemberTier.effective_from < month_end)


def announced(session: Session, member_id: str) -> bool:
    """Whether the membership platform has ever set the member's tier."""
    found = session.scalar(select(MemberTier.id).where(MemberTier.member_id == member_id).limit(1))
    return found is not None


def record_tier(session: Session, member_id: str, tier: str, at: dt.datetime) -> None:
    """The platform's new word on the member's tier, from `at` on (the caller holds the
    member's row lock: `Ledger.lock_member`)."""
    session.add(MemberTier(member_id=member_id, tier=tier, effective_from=at))
    session.flush()


def _last(session: Session, member_id: str, when: ColumnElement[bool]) -> str:
    # Two changes at one instant (a clock's resolution): the later row wins.
    tier = session.scalar(
        select(MemberTier.tier)
        .where(MemberTier.member_id == member_id, when)
        .order_by(MemberTier.effective_from.desc(), MemberTier.id.desc())
        .limit(1)
    )
    return tier or DEFAULT_TIER
