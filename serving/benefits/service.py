"""Member benefits as the API and the commands see them: a member's tier (the membership
platform's word), their benefits summary, and the scheduled month close and expiries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from serving.benefits import month as scheduled
from serving.benefits.ledger import Ledger, balance, closed, entry_json, point_lots, quota_granted
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
        """The membership platform's word on a member's tier (for their next submissions)."""
        with self.sessions() as session, session.begin():
            member = self.ledger.lock_member(session, member_id, tier)
            if member.tier != tier:
                member.tier, member.updated_at = tier, self.ledger.clock()
            return MemberOut(
                member_id=member.id, tier=member.tier, updated_at=iso_utc(member.updated_at)
            )

    def close_month(
        self, month: str, now: dt.datetime | None = None, member_ids: Iterable[str] | None = None
    ) -> scheduled.MonthClose:
        return scheduled.close_month(self.sessions, self.ledger, month, now, member_ids)

    def expire_points(
        self, now: dt.datetime | None = None, member_ids: Iterable[str] | None = None
    ) -> scheduled.Expiries:
        return scheduled.expire_points(self.sessions, self.ledger, now, member_ids)

    def summary(
        self, member_id: str, limit: int = 50, offset: int = 0, now: dt.datetime | None = None
    ) -> BenefitsSummary | None:
        """What `GET /v1/members/{id}/benefits` answers; None for an unknown member."""
        now = now or self.ledger.clock()
        month = self.ledger.month_of(now)
        with self.sessions() as session:
            member = session.get(Member, member_id)
            if member is None:
                return None
            return BenefitsSummary(
                member_id=member_id,
                tier=member.tier,
                month=month,
                free_appraisals=self._free(session, member, month),
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

    def _free(self, session: Session, member: Member, month: str) -> FreeAppraisals:
        allowance = self.ledger.config.free_per_month(member.tier)
        if allowance is None:
            return FreeAppraisals(allowance=None, left=None, unlimited=True)
        granted = quota_granted(session, member.id, month)
        left = balance(session, member.id, "free_appraisal", month)
        if closed(session, member.id, month):
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
