"""Member benefits as the API and the commands see them: a member's tier (the membership
platform's word, the only one), their benefits summary, and the scheduled month close and
expiries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from serving.benefits import month as scheduled
from serving.benefits.ledger import (
    Ledger,
    balance,
    closed,
    entry_json,
    parse_month,
    point_lots,
    quota_granted,
)
from serving.benefits.tiers import announced, record_tier, tier_at, tier_of_month
from serving.db import LedgerEntry, Member, iso_utc
from serving.schemas.members import (
    BenefitsSummary,
    Coupons,
    ExpiringPoints,
    FreeAppraisals,
    History,
    LedgerEntryOut,
    MemberOut,
    Points,
)


class BenefitsService:
    def __init__(self, sessions: sessionmaker, ledger: Ledger) -> None:
        self.sessions = sessions
        self.ledger = ledger

    def set_tier(self, member_id: str, tier: str) -> MemberOut:
        """The membership platform's word on a member's tier, from now on: the only writer of
        tiers (kept with their history). Its first word announces the member, which is when a
        welcome tier gets the joining coupon."""
        with self.sessions() as session, session.begin():
            member = self.ledger.lock_member(session, member_id)
            now = self.ledger.clock()
            first = not announced(session, member_id)
            if first or tier_at(session, member_id, now) != tier:
                record_tier(session, member_id, tier, now)
                member.tier, member.updated_at = tier, now
            if first:
                self.ledger.welcome(session, member_id, tier)
            return MemberOut(
                member_id=member.id, tier=member.tier, updated_at=iso_utc(member.updated_at)
            )

    def tier_of(self, member_id: str) -> str:
        """The member's tier now, as the platform set it; explorer if it never did."""
        with self.sessions() as session:
            return tier_at(session, member_id, self.ledger.clock())

    def close_month(
        self, month: str, now: dt.datetime | None = None, member_ids: Iterable[str] | None = None
    ) -> scheduled.MonthClose:
        """Bank `month` (YYYY-MM, else InvalidMonth; MonthNotOver before it ended)."""
        return scheduled.close_month(self.sessions, self.ledger, month, now, member_ids)

    def expire_points(
        self, now: dt.datetime | None = None, member_ids: Iterable[str] | None = None
    ) -> scheduled.Expiries:
        return scheduled.expire_points(self.sessions, self.ledger, now, member_ids)

    def summary(
        self,
        member_id: str,
        limit: int = 50,
        offset: int = 0,
        now: dt.datetime | None = None,
        month: str | None = None,
    ) -> BenefitsSummary | None:
        """What `GET /v1/members/{id}/benefits` answers; None for an unknown member. The free
        appraisals are those of `month` (YYYY-MM, else InvalidMonth; default: this month)."""
        now = now or self.ledger.clock()
        month = parse_month(month) if month is not None else self.ledger.month_of(now)
        _, end = self.ledger.month_bounds(month)
        with self.sessions() as session:
            member = session.get(Member, member_id)
            if member is None:
                return None
            tier = tier_at(session, member_id, now)
            # A month under way (or to come) counts with the tier now, an ended one with its last.
            held = tier if now < end else tier_of_month(session, member_id, end)
            return BenefitsSummary(
                member_id=member_id,
                tier=tier,
                month=month,
                free_appraisals=self._free(session, member_id, month, held),
                coupons=Coupons(
                    appraisal=balance(session, member_id, "appraisal_coupon"),
                    discount=balance(session, member_id, "discount_coupon"),
                    compensation_cny=balance(session, member_id, "compensation_cny"),
                ),
                points=Points(
                    balance=balance(session, member_id, "points"),
                    expiring_next=_expiring_next(session, member_id, now),
                ),
                history=_history(session, member_id, limit, offset),
            )

    def _free(self, session: Session, member_id: str, month: str, tier: str) -> FreeAppraisals:
        allowance = self.ledger.config.free_per_month(tier)
        if allowance is None:
            return FreeAppraisals(allowance=None, left=None, unlimited=True)
        granted = quota_granted(session, member_id, month)
        left = balance(session, member_id, "free_appraisal", month)
        if closed(session, member_id, month):
            left = 0
        else:
            left += max(0, allowance - granted)  # granted when first needed
        return FreeAppraisals(allowance=max(allowance, granted), left=left, unlimited=False)


def _expiring_next(session: Session, member_id: str, now: dt.datetime) -> ExpiringPoints | None:
    due = [lot for lot in point_lots(session, member_id) if lot.left > 0 and lot.expires_at > now]
    if not due:
        return None
    first = due[0].expires_at
    points = sum(lot.left for lot in due if lot.expires_at == first)
    return ExpiringPoints(points=points, at=iso_utc(first))


def _history(session: Session, member_id: str, limit: int, offset: int) -> History:
    mine = LedgerEntry.member_id == member_id
    total = session.scalar(select(func.count()).select_from(LedgerEntry).where(mine)) or 0
    entries = session.scalars(
        select(LedgerEntry).where(mine).order_by(LedgerEntry.id.desc()).limit(limit).offset(offset)
    ).all()
    return History(
        total=int(total),
        limit=limit,
        offset=offset,
        entries=[LedgerEntryOut(**entry_json(entry)) for entry in entries],
    )
