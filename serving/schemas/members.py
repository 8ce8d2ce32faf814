"""Members and their benefits: the membership platform sets a tier; the app and the platform
read the benefits; a senior reviewer or an admin overturns a final verdict."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class TierBody(BaseModel):
    tier: str = Field(..., min_length=1, max_length=32)


class MemberOut(BaseModel):
    member_id: str
    tier: str
    updated_at: str | None


class FreeAppraisals(BaseModel):
    allowance: int | None  # None: unlimited
    left: int | None
    unlimited: bool


class Coupons(BaseModel):
    appraisal: int
    discount: int
    compensation_cny: int


class ExpiringPoints(BaseModel):
    points: int
    at: str | None


class Points(BaseModel):
    balance: int
    expiring_next: ExpiringPoints | None


class LedgerEntryOut(BaseModel):
    id: int
    at: str | None
    asset: str
    amount: int
    reason: str
    key: str
    appraisal_id: str | None
    month: str | None
    expires_at: str | None
    detail: dict[str, Any]


class History(BaseModel):
    total: int
    limit: int
    offset: int
    entries: list[LedgerEntryOut]


class BenefitsSummary(BaseModel):
    """A month's free appraisals left (this month's unless asked), the tier now, coupons, points
    (and what expires next), and the ledger, newest first."""

    member_id: str
    tier: str  # as the membership platform set it; explorer if it never did
    month: str  # YYYY-MM, the month of `free_appraisals`
    free_appraisals: FreeAppraisals
    coupons: Coupons
    points: Points
    history: History


class OverturnBody(BaseModel):
    outcome: Literal["authentic", "counterfeit", "inconclusive"]
    reason: str = Field(..., min_length=1, max_length=2000)


class OverturnOut(BaseModel):
    id: str
    status: str
    outcome: str | None
