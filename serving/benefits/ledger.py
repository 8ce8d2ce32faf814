"""The benefits ledger: the one place that appends `ledger_entries`.

The ledger is append-only. A member's balance of an asset is the sum of their entries of it:

- `free_appraisal`: the month's free quota (`month` set): granted when first needed in the month
  (topped up if the member reached a higher tier), spent by a submission, returned by an
  `inconclusive` final verdict, and zeroed at month close into points (the benefit bank);
- `appraisal_coupon`: pays one appraisal (given back as a refund in kind after an overturn);
- `discount_coupon`: the welcome coupon, taken off the price of a paid appraisal;
- `compensation_cny`: compensation coupons in CNY (a late final verdict), redeemed by the
  membership platform;
- `points`: every credit carries `expires_at`; spending and expiry take the oldest points
  first.

Each entry's idempotency key is derived from its cause (`appraisal:{id}:reserve`,
`member:{id}:bank:{month}`, ...) and is unique in the table, so a retried or replayed cause
never grants or charges twice; corrections are new, compensating entries, never edits.

Every write locks the member's row first (`SELECT ... FOR UPDATE`; created if absent), so two
concurrent submissions by one member on PostgreSQL cannot spend the same free appraisal twice;
on SQLite writes are serialized anyway. Entries and the events they send to the membership
platform (`serving.outbox.events`) are written in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving.benefits.config import BenefitsConfig
from serving.db import LedgerEntry, Member, as_utc, iso_utc, utcnow
from serving.outbox.events import record
from touchstone.vocabulary import DEFAULT_TIER

ASSETS = ("free_appraisal", "appraisal_coupon", "discount_coupon", "compensation_cny", "points")
DEFINITE = ("authentic", "counterfeit")
_MONTH = re.compile(r"(\d{4})-(\d{2})", re.ASCII)


class InvalidMonth(ValueError):
    """A month not written YYYY-MM (the API answers 422 `invalid_month`, the commands exit 2)."""


def parse_month(text: str) -> str:
    """The month `text` names, written YYYY-MM, or InvalidMonth. The one reader of a month from
    outside: strict, because a month is part of idempotency keys (`member:{id}:close:{month}`),
    so `2026-1` and `2026-001` must not pass for `2026-01` and be banked again."""
    match = _MONTH.fullmatch(text)
    if match is None or not 1 <= int(match[2]) <= 12 or not 1900 <= int(match[1]) <= 9998:
        raise InvalidMonth(f"a month is YYYY-MM (e.g. 2026-01, from 1900 to 9998), not {text!r}")
    return f"{int(match[1]):04d}-{int(match[2]):02d}"


@dataclass
class Lot:
    """Points from one credit entry, and what is left of them after the oldest-first spending."""

    entry_id: int
    expires_at: dt.datetime
    amount: int
    left: int


class Ledger:
    """The ledger's writes, bound to the benefits configuration and a clock (tests move it)."""

    def __init__(self, config: BenefitsConfig, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.config = config
        self.clock = clock

    # -- months, in the members' time zone ------------------------------------------------------

    def month_of(self, when: dt.datetime) -> str:
        """YYYY-MM of `when` in the members' time zone."""
        return as_utc(when).astimezone(self.config.zone).strftime("%Y-%m")

    def month_bounds(self, month: str) -> tuple[dt.datetime, dt.datetime]:
        """Start and end (exclusive, UTC) of a YYYY-MM month in the members' time zone
        (InvalidMonth if it is not written so)."""
        zone = self.config.zone
        year, number = (int(part) for part in parse_month(month).split("-"))
        start = dt.datetime(year, number, 1, tzinfo=zone)
        end = dt.datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
        return start.astimezone(dt.UTC), end.astimezone(dt.UTC)

    # -- entries ----------------------------------------------------------------------------------

    def post(
        self,
        session: Session,
        member_id: str,
        asset: str,
        amount: int,
        reason: str,
        key: str,
        *,
        appraisal_id: str | None = None,
        month: str | None = None,
        expires_at: dt.datetime | None = None,
        detail: dict[str, Any] | None = None,
        event: str | None = "benefit.granted",
    ) -> LedgerEntry | None:
        """Append one entry, unless its key was posted before (then None: a replay)."""
        assert asset in ASSETS, asset
        if posted(session, key):
            return None
        entry = LedgerEntry(
            member_id=member_id,
            asset=asset,
            amount=amount,
            reason=reason,
            idempotency_key=key,
            appraisal_id=appraisal_id,
            month=month,
            expires_at=expires_at,
            detail=detail or {},
            created_at=self.clock(),
        )
        session.add(entry)
        session.flush()
        if event:
            tell_platform(session, event, member_id, appraisal_id, entry_json(entry))
        return entry

    def credit_points(
        self,
        session: Session,
        member_id: str,
        amount: int,
        reason: str,
        key: str,
        appraisal_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> LedgerEntry | None:
        """Points that expire `points_lifetime_days` from now."""
        if amount <= 0:
            return None
        return self.post(
            session,
            member_id,
            "points",
            amount,
            reason,
            key,
            appraisal_id=appraisal_id,
            expires_at=self.points_expiry(),
            detail=detail,
        )

    def points_expiry(self) -> dt.datetime:
        return self.clock() + dt.timedelta(days=self.config.points_lifetime_days)

    # -- members ----------------------------------------------------------------------------------

    def lock_member(self, session: Session, member_id: str) -> Member:
        """The member's row, locked until the transaction ends; created if absent, as an
        explorer and with nothing granted: only the membership platform announces a member and
        sets a tier (`BenefitsService.set_tier`), never an app naming an id."""
        now = self.clock()
        if session.get_bind().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        statement = (
            insert(Member)
            .values(id=member_id, tier=DEFAULT_TIER, created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        session.execute(statement)
        member = session.scalar(
            select(Member)
            .where(Member.id == member_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        assert member is not None
        return member

    def welcome(self, session: Session, member_id: str, tier: str) -> None:
        """The joining discount coupon, for a member the platform announces at a welcome tier
        (once: the key is the member's)."""
        cfg = self.config
        if tier in cfg.joining_discount_tiers and cfg.joining_discount_cny > 0:
            self.post(
                session,
                member_id,
                "discount_coupon",
                1,
                "joining",
                f"member:{member_id}:joining",
                detail={"value_cny": cfg.joining_discount_cny},
            )

    def ensure_quota(self, session: Session, member_id: str, month: str, tier: str) -> None:
        """Grant the month's free quota of `tier`, or top it up to it (a higher tier reached
        mid-month); never after the month closed, never taken back on a lower tier."""
        allowance = self.config.free_per_month(tier)
        if not allowance or closed(session, member_id, month):
            return
        granted = quota_granted(session, member_id, month)
        if allowance > granted:
            self.post(
                session,
                member_id,
                "free_appraisal",
                allowance - granted,
                "monthly_quota",
                f"member:{member_id}:quota:{month}:to{allowance}",
                month=month,
                detail={"tier": tier, "allowance": allowance},
            )

    def expire_points(self, session: Session, member_id: str, now: dt.datetime) -> tuple[int, int]:
        """Post the expiry of due points (a compensating entry per lot) and a reminder (an empty
        entry and a `points.expiring` event) for points due within the reminder window; return
        the points expired and the reminders sent."""
        window = dt.timedelta(days=self.config.expiry_reminder_days)
        expired = reminded = 0
        for lot in point_lots(session, member_id):
            if lot.left <= 0:
                continue
            if lot.expires_at <= now:
                expired += self._expire(session, member_id, lot)
            elif lot.expires_at - window <= now:
                reminded += self._remind(session, member_id, lot)
        return expired, reminded

    def _expire(self, session: Session, member_id: str, lot: Lot) -> int:
        entry = self.post(
            session,
            member_id,
            "points",
            -lot.left,
            "expired",
            f"points:{lot.entry_id}:expire",
            detail={"lot": lot.entry_id, "expired_at": iso_utc(lot.expires_at)},
            event=None,
        )
        return lot.left if entry is not None else 0

    def _remind(self, session: Session, member_id: str, lot: Lot) -> int:
        entry = self.post(
            session,
            member_id,
            "points",
            0,
            "expiry_reminder",
            f"points:{lot.entry_id}:reminder",
            detail={"lot": lot.entry_id, "points": lot.left, "at": iso_utc(lot.expires_at)},
            event=None,
        )
        if entry is None:
            return 0
        payload = {"points": lot.left, "expires_at": iso_utc(lot.expires_at), "lot": lot.entry_id}
        tell_platform(session, "points.expiring", member_id, None, payload)
        return 1


# -- reading ----------------------------------------------------------------------------------


def balance(session: Session, member_id: str, asset: str, month: str | None = None) -> int:
    query = select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
        LedgerEntry.member_id == member_id, LedgerEntry.asset == asset
    )
    if month is not None:
        query = query.where(LedgerEntry.month == month)
    return int(session.scalar(query) or 0)


def posted(session: Session, key: str) -> bool:
    """Whether an entry with this idempotency key exists."""
    found = session.scalar(select(LedgerEntry.id).where(LedgerEntry.idempotency_key == key))
    return found is not None


def closed(session: Session, member_id: str, month: str) -> bool:
    return posted(session, f"member:{member_id}:close:{month}")


def quota_granted(session: Session, member_id: str, month: str) -> int:
    """Free appraisals granted to the member for `month` (before any were spent)."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                LedgerEntry.member_id == member_id,
                LedgerEntry.asset == "free_appraisal",
                LedgerEntry.month == month,
                LedgerEntry.reason == "monthly_quota",
            )
        )
        or 0
    )


def point_lots(session: Session, member_id: str) -> list[Lot]:
    """The member's point credits, oldest expiry first, with what is left of each."""
    rows = session.execute(
        select(LedgerEntry.id, LedgerEntry.amount, LedgerEntry.expires_at).where(
            LedgerEntry.member_id == member_id, LedgerEntry.asset == "points"
        )
    ).all()
    lots = sorted(
        (Lot(id_, as_utc(expires), amount, amount) for id_, amount, expires in rows if amount > 0),
        key=lambda lot: (lot.expires_at, lot.entry_id),
    )
    spent = -sum(amount for _, amount, _ in rows if amount < 0)
    for lot in lots:
        taken = min(lot.left, spent)
        lot.left -= taken
        spent -= taken
    return lots


def entry_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": iso_utc(entry.created_at),
        "asset": entry.asset,
        "amount": entry.amount,
        "reason": entry.reason,
        "key": entry.idempotency_key,
        "appraisal_id": entry.appraisal_id,
        "month": entry.month,
        "expires_at": iso_utc(entry.expires_at),
        "detail": entry.detail,
    }


def tell_platform(
    session: Session,
    kind: str,
    member_id: str,
    appraisal_id: str | None,
    payload: dict[str, Any],
) -> None:
    """An event for the membership platform, in this transaction."""
    record(session, kind, member_id=member_id, appraisal_id=appraisal_id, payload=payload)
