"""Member benefits: the one place that writes the ledger (`ledger_entries`) and how appraisals
were paid for (`appraisal_payments`).

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
on SQLite writes are serialized anyway. The listeners below run inside the transaction of their
cause (`serving.lifecycle`), and so do the events they send to the membership platform through
`serving.outbox` (when that module is present).
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from serving import lifecycle
from serving.benefits_config import BenefitsConfig, load_benefits
from serving.db import Appraisal, AppraisalPayment, LedgerEntry, Member, as_utc, utcnow

ASSETS = ("free_appraisal", "appraisal_coupon", "discount_coupon", "compensation_cny", "points")
DEFINITE = ("authentic", "counterfeit")

_config: BenefitsConfig | None = None
clock: Callable[[], dt.datetime] = utcnow  # tests move time


class MonthNotOver(ValueError):
    """Closing a month that has not ended yet (in the members' time zone)."""


def config() -> BenefitsConfig:
    global _config
    if _config is None:
        _config = load_benefits()
    return _config


def configure(value: BenefitsConfig | None) -> None:
    """Use this configuration (None: read the file again when next needed)."""
    global _config
    _config = value


# -- time -------------------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat().replace("+00:00", "Z")


def month_of(when: dt.datetime, cfg: BenefitsConfig | None = None) -> str:
    """YYYY-MM of `when` in the members' time zone."""
    return as_utc(when).astimezone((cfg or config()).zone).strftime("%Y-%m")


def month_bounds(month: str, cfg: BenefitsConfig | None = None) -> tuple[dt.datetime, dt.datetime]:
    """Start and end (exclusive, UTC) of a YYYY-MM month in the members' time zone."""
    zone = (cfg or config()).zone
    try:
        year, number = (int(part) for part in month.split("-"))
        start = dt.datetime(year, number, 1, tzinfo=zone)
    except ValueError as exc:
        raise ValueError(f"a month is YYYY-MM, not {month!r}") from exc
    end = dt.datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


# -- the ledger -------------------------------------------------------------------------------


def _emit(
    session: Session,
    kind: str,
    member_id: str,
    appraisal_id: str | None,
    payload: dict[str, Any],
) -> None:
    """An event for the membership platform, in this transaction, if the outbox exists."""
    try:
        outbox = importlib.import_module("serving.outbox.events")
    except ImportError:
        return
    outbox.record(session, kind, member_id=member_id, appraisal_id=appraisal_id, payload=payload)


def _post(
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
    if session.scalar(select(LedgerEntry.id).where(LedgerEntry.idempotency_key == key)):
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
        created_at=clock(),
    )
    session.add(entry)
    session.flush()
    if event:
        _emit(session, event, member_id, appraisal_id, entry_json(entry))
    return entry


def entry_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": _iso(entry.created_at),
        "asset": entry.asset,
        "amount": entry.amount,
        "reason": entry.reason,
        "key": entry.idempotency_key,
        "appraisal_id": entry.appraisal_id,
        "month": entry.month,
        "expires_at": _iso(entry.expires_at),
        "detail": entry.detail,
    }


def balance(session: Session, member_id: str, asset: str, month: str | None = None) -> int:
    query = select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
        LedgerEntry.member_id == member_id, LedgerEntry.asset == asset
    )
    if month is not None:
        query = query.where(LedgerEntry.month == month)
    return int(session.scalar(query) or 0)


def _exists(session: Session, key: str) -> bool:
    return (
        session.scalar(select(LedgerEntry.id).where(LedgerEntry.idempotency_key == key)) is not None
    )


def lock_member(session: Session, member_id: str, tier: str) -> Member:
    """The member's row, locked until the transaction ends; created with `tier` if absent (a
    new member of a welcome tier gets the joining discount coupon)."""
    now = clock()
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = (
        insert(Member)
        .values(id=member_id, tier=tier, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["id"])
    )
    created = session.execute(statement).rowcount == 1
    member = session.scalar(
        select(Member)
        .where(Member.id == member_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert member is not None
    cfg = config()
    if created and tier in cfg.joining_discount_tiers and cfg.joining_discount_cny > 0:
        _post(
            session,
            member_id,
            "discount_coupon",
            1,
            "joining",
            f"member:{member_id}:joining",
            detail={"value_cny": cfg.joining_discount_cny},
        )
    return member


def _closed(session: Session, member_id: str, month: str) -> bool:
    return _exists(session, f"member:{member_id}:close:{month}")


def _quota_granted(session: Session, member_id: str, month: str) -> int:
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


def _ensure_quota(session: Session, member_id: str, month: str, tier: str) -> None:
    """Grant the month's free quota of `tier`, or top it up to it (a higher tier reached
    mid-month); never after the month closed, never taken back on a lower tier."""
    allowance = config().free_per_month(tier)
    if not allowance or _closed(session, member_id, month):
        return
    granted = _quota_granted(session, member_id, month)
    if allowance > granted:
        _post(
            session,
            member_id,
            "free_appraisal",
            allowance - granted,
            "monthly_quota",
            f"member:{member_id}:quota:{month}:to{allowance}",
            month=month,
            detail={"tier": tier, "allowance": allowance},
        )


def _credit_points(
    session: Session,
    member_id: str,
    amount: int,
    reason: str,
    key: str,
    appraisal_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> LedgerEntry | None:
    if amount <= 0:
        return None
    now = clock()
    return _post(
        session,
        member_id,
        "points",
        amount,
        reason,
        key,
        appraisal_id=appraisal_id,
        expires_at=now + dt.timedelta(days=config().points_lifetime_days),
        detail=detail,
    )


@dataclass
class Lot:
    """Points from one credit entry, and what is left of them after the oldest-first spending."""

    entry_id: int
    expires_at: dt.datetime
    amount: int
    left: int


def point_lots(session: Session, member_id: str) -> list[Lot]:
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


def _expire_points(session: Session, member_id: str, now: dt.datetime) -> tuple[int, int]:
    """Post the expiry of due points (a compensating entry per lot) and a reminder (an empty
    entry and a `points.expiring` event) for points due within the reminder window."""
    cfg = config()
    expired = reminded = 0
    for lot in point_lots(session, member_id):
        if lot.left <= 0:
            continue
        if lot.expires_at <= now:
            if _post(
                session,
                member_id,
                "points",
                -lot.left,
                "expired",
                f"points:{lot.entry_id}:expire",
                detail={"lot": lot.entry_id, "expired_at": _iso(lot.expires_at)},
                event=None,
            ):
                expired += lot.left
        elif lot.expires_at - dt.timedelta(days=cfg.expiry_reminder_days) <= now:
            entry = _post(
                session,
                member_id,
                "points",
                0,
                "expiry_reminder",
                f"points:{lot.entry_id}:reminder",
                detail={"lot": lot.entry_id, "points": lot.left, "at": _iso(lot.expires_at)},
                event=None,
            )
            if entry is not None:
                reminded += 1
                _emit(
                    session,
                    "points.expiring",
                    member_id,
                    None,
                    {"points": lot.left, "expires_at": _iso(lot.expires_at), "lot": lot.entry_id},
                )
    return expired, reminded


# -- listeners --------------------------------------------------------------------------------


@lifecycle.on("appraisal.created")
def pay_at_submission(session: Session, appraisal: Appraisal, detail: dict[str, Any]) -> None:
    """Pay for the appraisal: the month's free quota, else an appraisal coupon, else points,
    else a paid appraisal at the configured price (less a discount coupon if held)."""
    if appraisal.is_gold or session.get(AppraisalPayment, appraisal.id) is not None:
        return
    cfg = config()
    member_id, key = appraisal.member_id, f"appraisal:{appraisal.id}:reserve"
    lock_member(session, member_id, appraisal.member_tier)
    now = clock()
    month = month_of(appraisal.created_at or now)
    price: float | None = None
    entry: LedgerEntry | None = None
    allowance = cfg.free_per_month(appraisal.member_tier)
    if allowance is None:
        method = "unlimited"
    else:
        _ensure_quota(session, member_id, month, appraisal.member_tier)
        _expire_points(session, member_id, now)
        common = {"appraisal_id": appraisal.id, "event": None}
        if balance(session, member_id, "free_appraisal", month) > 0:
            method = "free_quota"
            entry = _post(
                session, member_id, "free_appraisal", -1, "reserve", key, month=month, **common
            )
        elif balance(session, member_id, "appraisal_coupon") > 0:
            method = "coupon"
            entry = _post(session, member_id, "appraisal_coupon", -1, "reserve", key, **common)
        elif balance(session, member_id, "points") >= cfg.points_per_appraisal:
            method = "points"
            entry = _post(
                session, member_id, "points", -cfg.points_per_appraisal, "reserve", key, **common
            )
        else:
            method, price = "paid", cfg.appraisal_price_cny
            if balance(session, member_id, "discount_coupon") > 0:
                entry = _post(
                    session,
                    member_id,
                    "discount_coupon",
                    -1,
                    "reserve",
                    key,
                    detail={"value_cny": cfg.joining_discount_cny},
                    **common,
                )
                price = max(0.0, price - cfg.joining_discount_cny)
    session.add(
        AppraisalPayment(
            appraisal_id=appraisal.id,
            member_id=member_id,
            method=method,
            status="reserved",
            price_cny=price,
            created_at=now,
            updated_at=now,
        )
    )
    session.flush()
    _emit(
        session,
        "benefit.reserved",
        member_id,
        appraisal.id,
        {
            "method": method,
            "price_cny": price,
            "tier": appraisal.member_tier,
            "entry": entry_json(entry) if entry else None,
        },
    )


def _release(session: Session, appraisal: Appraisal, payment: AppraisalPayment) -> None:
    """Give back what paid for the appraisal (an `inconclusive` final verdict)."""
    cfg = config()
    member_id, base = payment.member_id, f"appraisal:{appraisal.id}"
    reserve = session.scalar(
        select(LedgerEntry).where(LedgerEntry.idempotency_key == f"{base}:reserve")
    )
    common = {"appraisal_id": appraisal.id, "event": None}
    if reserve is not None:
        _post(
            session,
            member_id,
            reserve.asset,
            -reserve.amount,
            "release",
            f"{base}:release",
            month=reserve.month,
            expires_at=(
                clock() + dt.timedelta(days=cfg.points_lifetime_days)
                if reserve.asset == "points"
                else None
            ),
            **common,
        )
        if reserve.asset == "free_appraisal" and _closed(session, member_id, reserve.month or ""):
            # The month closed meanwhile: the returned free appraisal goes to the bank too.
            _post(
                session,
                member_id,
                "free_appraisal",
                -1,
                "bank",
                f"{base}:bank",
                month=reserve.month,
                **common,
            )
            _credit_points(
                session,
                member_id,
                cfg.bank_points_per_free_appraisal,
                "bank",
                f"{base}:bank_points",
                appraisal.id,
                {"month": reserve.month},
            )
    payment.status, payment.updated_at = "released", clock()
    _emit(
        session,
        "benefit.released",
        member_id,
        appraisal.id,
        {"method": payment.method, "refund_cny": payment.price_cny},
    )


@lifecycle.on("appraisal.finalized")
def settle_final_verdict(session: Session, appraisal: Appraisal, detail: dict[str, Any]) -> None:
    """The first final verdict settles the payment: `inconclusive` releases it, any other
    consumes it and earns the reward points; a verdict past the SLA earns the coupon. A later
    final verdict (a person after the model) changes nothing here: an overturn does."""
    if appraisal.is_gold:
        return
    payment = session.get(AppraisalPayment, appraisal.id)
    if payment is None or payment.status != "reserved":
        return
    cfg = config()
    member_id, base = payment.member_id, f"appraisal:{appraisal.id}"
    lock_member(session, member_id, appraisal.member_tier)
    session.refresh(payment, with_for_update=True)
    if payment.status != "reserved":
        return
    now = clock()
    if appraisal.outcome == "inconclusive":
        _release(session, appraisal, payment)
    else:
        payment.status, payment.updated_at = "consumed", now
        _emit(session, "benefit.consumed", member_id, appraisal.id, {"method": payment.method})
        if appraisal.outcome in DEFINITE:
            _credit_points(
                session,
                member_id,
                cfg.reward_points_per_verdict,
                "verdict_reward",
                f"{base}:reward",
                appraisal.id,
                {"outcome": appraisal.outcome},
            )
    finished = as_utc(appraisal.finalized_at or now)
    if finished > as_utc(appraisal.sla_due_at) and cfg.sla_coupon_cny > 0:
        _post(
            session,
            member_id,
            "compensation_cny",
            cfg.sla_coupon_cny,
            "sla_compensation",
            f"{base}:sla",
            appraisal_id=appraisal.id,
            detail={"due_at": _iso(appraisal.sla_due_at), "finalized_at": _iso(finished)},
        )


@lifecycle.on("appraisal.overturned")
def compensate_overturn(session: Session, appraisal: Appraisal, detail: dict[str, Any]) -> None:
    """A member wrongly told "authentic" or "counterfeit": refund in kind, plus points; once
    per appraisal, however often it is overturned."""
    previous = detail.get("previous")
    if appraisal.is_gold or previous not in DEFINITE or previous == appraisal.outcome:
        return
    payment = session.get(AppraisalPayment, appraisal.id)
    if payment is None:
        return
    cfg = config()
    member_id, base = payment.member_id, f"appraisal:{appraisal.id}"
    lock_member(session, member_id, appraisal.member_tier)
    session.refresh(payment, with_for_update=True)
    why = {"previous": previous, "outcome": appraisal.outcome}
    if cfg.overturn_refund and payment.status == "consumed":
        if payment.method in ("free_quota", "coupon"):
            _post(
                session,
                member_id,
                "appraisal_coupon",
                1,
                "overturn_refund",
                f"{base}:overturn_refund",
                appraisal_id=appraisal.id,
                detail=why,
            )
        elif payment.method == "points":
            _credit_points(
                session,
                member_id,
                cfg.points_per_appraisal,
                "overturn_refund",
                f"{base}:overturn_refund",
                appraisal.id,
                why,
            )
        elif payment.method == "paid" and payment.price_cny:
            _emit(
                session,
                "benefit.granted",
                member_id,
                appraisal.id,
                {"reason": "overturn_refund", "refund_cny": payment.price_cny, **why},
            )
        payment.status, payment.updated_at = "refunded", clock()
    _credit_points(
        session,
        member_id,
        cfg.overturn_points,
        "overturn_compensation",
        f"{base}:overturn",
        appraisal.id,
        why,
    )


# -- operations -------------------------------------------------------------------------------


def close_month(
    sessions: sessionmaker,
    month: str,
    now: dt.datetime | None = None,
    member_ids: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Bank each member's unused free appraisals of `month` as points; safe to run twice (a
    member's close is one entry keyed by member and month). Also posts due point expiries."""
    cfg = config()
    now = now or clock()
    _, end = month_bounds(month, cfg)
    if now < end:
        raise MonthNotOver(f"{month} ends at {_iso(end)}; it cannot be closed before")
    with sessions() as session:
        query = select(Member.id).where(Member.created_at < end).order_by(Member.id)
        if member_ids is not None:
            query = query.where(Member.id.in_(list(member_ids)))
        ids = list(session.scalars(query))
    totals = {
        "month": month,
        "members": 0,
        "closed_now": 0,
        "free_appraisals_banked": 0,
        "points_banked": 0,
        "points_expired": 0,
        "expiry_reminders": 0,
    }
    for member_id in ids:
        with sessions() as session, session.begin():
            member = lock_member(session, member_id, "explorer")
            totals["members"] += 1
            expired, reminded = _expire_points(session, member_id, now)
            totals["points_expired"] += expired
            totals["expiry_reminders"] += reminded
            if _closed(session, member_id, month):
                continue
            # A member who never needed this month's quota still had it.
            _ensure_quota(session, member_id, month, member.tier)
            unused = max(0, balance(session, member_id, "free_appraisal", month))
            _post(
                session,
                member_id,
                "free_appraisal",
                -unused,
                "month_close",
                f"member:{member_id}:close:{month}",
                month=month,
                event=None,
            )
            points = unused * cfg.bank_points_per_free_appraisal
            _credit_points(
                session,
                member_id,
                points,
                "bank",
                f"member:{member_id}:bank:{month}",
                detail={"month": month, "free_appraisals": unused},
            )
            totals["closed_now"] += 1
            totals["free_appraisals_banked"] += unused
            totals["points_banked"] += points
    return totals


def expire_points(
    sessions: sessionmaker,
    now: dt.datetime | None = None,
    member_ids: Iterable[str] | None = None,
) -> dict[str, int]:
    """Post due point expiries and reminders for every member (safe to run often)."""
    now = now or clock()
    with sessions() as session:
        query = select(Member.id).order_by(Member.id)
        if member_ids is not None:
            query = query.where(Member.id.in_(list(member_ids)))
        ids = list(session.scalars(query))
    totals = {"members": 0, "points_expired": 0, "expiry_reminders": 0}
    for member_id in ids:
        with sessions() as session, session.begin():
            lock_member(session, member_id, "explorer")
            expired, reminded = _expire_points(session, member_id, now)
            totals["members"] += 1
            totals["points_expired"] += expired
            totals["expiry_reminders"] += reminded
    return totals


def set_tier(sessions: sessionmaker, member_id: str, tier: str) -> Member:
    """The membership platform's word on a member's tier (for their next submissions)."""
    with sessions() as session, session.begin():
        member = lock_member(session, member_id, tier)
        if member.tier != tier:
            member.tier, member.updated_at = tier, clock()
    return member


def summary(
    sessions: sessionmaker,
    member_id: str,
    limit: int = 50,
    offset: int = 0,
    now: dt.datetime | None = None,
) -> dict[str, Any] | None:
    """What `GET /v1/members/{id}/benefits` answers; None for an unknown member."""
    cfg = config()
    now = now or clock()
    month = month_of(now, cfg)
    with sessions() as session:
        member = session.get(Member, member_id)
        if member is None:
            return None
        allowance = cfg.free_per_month(member.tier)
        if allowance is None:
            free: dict[str, Any] = {"allowance": None, "left": None, "unlimited": True}
        else:
            granted = _quota_granted(session, member_id, month)
            left = balance(session, member_id, "free_appraisal", month)
            if not _closed(session, member_id, month):
                left += max(0, allowance - granted)  # granted when first needed
            else:
                left = 0
            free = {"allowance": max(allowance, granted), "left": left, "unlimited": False}
        lots = [lot for lot in point_lots(session, member_id) if lot.left > 0]
        due = [lot for lot in lots if lot.expires_at > now]
        following = None
        if due:
            first = due[0].expires_at
            following = {
                "points": sum(lot.left for lot in due if lot.expires_at == first),
                "at": _iso(first),
            }
        total = int(
            session.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(LedgerEntry.member_id == member_id)
            )
            or 0
        )
        entries = session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.member_id == member_id)
            .order_by(LedgerEntry.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        return {
            "member_id": member_id,
            "tier": member.tier,
            "month": month,
            "free_appraisals": free,
            "coupons": {
                "appraisal": balance(session, member_id, "appraisal_coupon"),
                "discount": balance(session, member_id, "discount_coupon"),
                "compensation_cny": balance(session, member_id, "compensation_cny"),
            },
            "points": {
                "balance": balance(session, member_id, "points"),
                "expiring_next": following,
            },
            "history": {
                "total": total,
                "limit": limit,
                "offset": offset,
                "entries": [entry_json(entry) for entry in entries],
            },
        }
