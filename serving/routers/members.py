"""`/v1/members`: the membership platform sets a member's tier; the app and the platform read
the member's benefits."""

from __future__ import annotations

from asyncio import to_thread

from fastapi import APIRouter, Path, Query

from serving.deps import AppraisalsDep, BenefitsDep, MemberReader, PlatformCaller
from serving.errors import ApiError
from serving.schemas.members import BenefitsSummary, MemberOut, TierBody

router = APIRouter(prefix="/v1/members", tags=["members"])

MemberId = Path(..., min_length=1, max_length=64)


@router.put("/{member_id}", response_model=MemberOut)
async def set_tier(
    body: TierBody,
    benefits: BenefitsDep,
    appraisals: AppraisalsDep,
    _: PlatformCaller,
    member_id: str = MemberId,
) -> MemberOut:
    """Set the member's tier (it decides their next submissions; each appraisal keeps the tier
    it was submitted at)."""
    tiers = appraisals.policy.tiers
    if body.tier not in tiers:
        raise ApiError(422, "invalid_field", f"tier must be one of {', '.join(tiers)}")
    return await to_thread(benefits.set_tier, member_id, body.tier)


@router.get("/{member_id}/benefits", response_model=BenefitsSummary)
async def member_benefits(
    benefits: BenefitsDep,
    _: MemberReader,
    member_id: str = MemberId,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> BenefitsSummary:
    """This month's free appraisals left, coupons, points (and what expires next), and the
    ledger, newest first."""
    answer = await to_thread(benefits.summary, member_id, limit, offset)
    if answer is None:
        raise ApiError(404, "not_found", f"no member {member_id}")
    return answer
