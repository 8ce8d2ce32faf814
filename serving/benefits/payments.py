"""Paying for appraisals and what final verdicts and overturns give back: the listeners of the
appraisal lifecycle that write `appraisal_payments` and, through the ledger, the member's entries.
They run inside the transaction of their cause (`serving.lifecycle`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.benefits.ledger import DEFINITE, Ledger, balance, closed, entry_json, tell_platform
from serving.db import Appraisal, AppraisalPayment, LedgerEntry, as_utc, iso_utc


class Payments:
    """The month's free quota, else an appraisal coupon, else points, else a paid appraisal;
    settled by the first final verdict; refunded in kind and compensated after an overturn."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def pay_at_submission(self, session: Session, appraisal: Appraisal, _: dict[str, Any]) -> None:
        """Pay for the appraisal at submission, with the tier it was submitted at."""
        if appraisal.is_gold or session.get(AppraisalPayment, appraisal.id) is not None:
            return
        member_id = appraisal.member_id
        self.ledger.lock_member(session, member_id)
        now = self.ledger.clock()
        method, price, entry = self._reserve(session, appraisal, now)
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
        payload = {
            "method": method,
            "price_cny": price,
            "tier": appraisal.member_tier,
            "entry": entry_json(entry) if entry else None,
        }
        tell_platform(session, "benefit.reserved", member_id, appraisal.id, payload)

    def _reserve(
        self, session: Session, appraisal: Appraisal, now: dt.datetime
    ) -> tuple[str, float | None, LedgerEntry | None]:
        """The month's free quota, else an appraisal coupon, else points, else a paid appraisal
        at the configured price (less a discount coupon if held): the method, the price and the
        entry that reserved it."""
        cfg = self.ledger.config
        member_id, tier = appraisal.member_id, appraisal.member_tier
        if cfg.free_per_month(tier) is None:
            return "unlimited", None, None
        month = self.ledger.month_of(appraisal.created_at or now)
        self.ledger.ensure_quota(session, member_id, month, tier)
        self.ledger.expire_points(session, member_id, now)
        key = f"appraisal:{appraisal.id}:reserve"

        def spend(asset: str, amount: int, **extra: Any) -> LedgerEntry | None:
            return self.ledger.post(
                session,
                member_id,
                asset,
                -amount,
                "reserve",
                key,
                appraisal_id=appraisal.id,
                event=None,
                **extra,
            )

        if balance(session, member_id, "free_appraisal", month) > 0:
            return "free_quota", None, spend("free_appraisal", 1, month=month)
        if balance(session, member_id, "appraisal_coupon") > 0:
            return "coupon", None, spend("appraisal_coupon", 1)
        if balance(session, member_id, "points") >= cfg.points_per_appraisal:
            return "points", None, spend("points", cfg.points_per_appraisal)
        if balance(session, member_id, "discount_coupon") > 0:
            entry = spend("discount_coupon", 1, detail={"value_cny": cfg.joining_discount_cny})
            return "paid", max(0.0, cfg.appraisal_price_cny - cfg.joining_discount_cny), entry
        return "paid", cfg.appraisal_price_cny, None

    def _release(self, session: Session, appraisal: Appraisal, payment: AppraisalPayment) -> None:
        """Give back what paid for the appraisal (an `inconclusive` final verdict)."""
        cfg = self.ledger.config
        member_id, base = payment.member_id, f"appraisal:{appraisal.id}"
        reserve = session.scalar(
            select(LedgerEntry).where(LedgerEntry.idempotency_key == f"{base}:reserve")
        )
        common = {"appraisal_id": appraisal.id, "event": None}
        if reserve is not None:
            self.ledger.post(
                session,
                member_id,
                reserve.asset,
                -reserve.amount,
                "release",
                f"{base}:release",
                month=reserve.month,
                expires_at=self.ledger.points_expiry() if reserve.asset == "points" else None,
                **common,
            )
            if reserve.asset == "free_appraisal" and closed(
                session, member_id, reserve.month or ""
            ):
                # The month closed meanwhile: the returned free appraisal goes to the bank too.
                self.ledger.post(
                    session,
                    member_id,
                    "free_appraisal",
                    -1,
                    "bank",
                    f"{base}:bank",
                    month=reserve.month,
                    **common,
                )
                self.ledger.credit_points(
                    session,
                    member_id,
                    cfg.bank_points_per_free_appraisal,
                    "bank",
                    f"{base}:bank_points",
                    appraisal.id,
                    {"month": reserve.month},
                )
        payment.status, payment.updated_at = "released", self.ledger.clock()
        tell_platform(
            session,
            "benefit.released",
            member_id,
            appraisal.id,
            {"method": payment.method, "refund_cny": payment.price_cny},
        )

    def settle_final_verdict(
        self, session: Session, appraisal: Appraisal, detail: dict[str, Any]
    ) -> None:
        """The first final verdict settles the payment: `inconclusive` releases it, any other
        consumes it and earns the reward points; a verdict past the SLA earns the coupon. A later
        final verdict (a person after the model) changes nothing here: an overturn does."""
        if appraisal.is_gold:
            return
        payment = session.get(AppraisalPayment, appraisal.id)
        if payment is None or payment.status != "reserved":
            return
        cfg = self.ledger.config
        member_id, base = payment.member_id, f"appraisal:{appraisal.id}"
        self.ledger.lock_member(session, member_id)
        session.refresh(payment, with_for_update=True)
        if payment.status != "reserved":
            return
        now = self.ledger.clock()
        if appraisal.outcome == "inconclusive":
            self._release(session, appraisal, payment)
        else:
            payment.status, payment.updated_at = "consumed", now
            tell_platform(
                session, "benefit.consumed", member_id, appraisal.id, {"method": payment.method}
            )
            if appraisal.outcome in DEFINITE:
                self.ledger.credit_points(
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
            self.ledger.post(
                session,
                member_id,
                "compensation_cny",
                cfg.sla_coupon_cny,
                "sla_compensation",
                f"{base}:sla",
                appraisal_id=appraisal.id,
                detail={"due_at": iso_utc(appraisal.sla_due_at), "finalized_at": iso_utc(finished)},
            )

    def compensate_overturn(
        self, session: Session, appraisal: Appraisal, detail: dict[str, Any]
    ) -> None:
        """A member wrongly told "authentic" or "counterfeit": refund in kind, plus points; once
        per appraisal, however often it is overturned."""
        previous = detail.get("previous")
        if appraisal.is_gold or previous not in DEFINITE or previous == appraisal.outcome:
            return
        payment = session.get(AppraisalPayment, appraisal.id)
        if payment is None:
            return
        cfg = self.ledger.config
        member_id, base = payment.member_id, f"appraisal:{appraisal.id}"
        self.ledger.lock_member(session, member_id)
        session.refresh(payment, with_for_update=True)
        why = {"previous": previous, "outcome": appraisal.outcome}
        if cfg.overturn_refund and payment.status == "consumed":
            if payment.method in ("free_quota", "coupon"):
                self.ledger.post(
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
                self.ledger.credit_points(
                    session,
                    member_id,
                    cfg.points_per_appraisal,
                    "overturn_refund",
                    f"{base}:overturn_refund",
                    appraisal.id,
                    why,
                )
            elif payment.method == "paid" and payment.price_cny:
                tell_platform(
                    session,
                    "benefit.granted",
                    member_id,
                    appraisal.id,
                    {"reason": "overturn_refund", "refund_cny": payment.price_cny, **why},
                )
            payment.status, payment.updated_at = "refunded", self.ledger.clock()
        self.ledger.credit_points(
            session,
            member_id,
            cfg.overturn_points,
            "overturn_compensation",
            f"{base}:overturn",
            appraisal.id,
            why,
        )
