"""`/v1/members`: the membership platform sets a member's tier; the app and the platform read
the member's benefits."""

from __future__ import annotations

from asyncio import to_thread

from fastapi import APIRouter, Path, Query

from serving.benefits.ledger import InvalidMonth
from serving.benefits.service import BenefitsService
from serving.deps import BenefitsDep, MemberReader, PlatformCaller
from serving.errors import ApiError
from serving.schemas.members import BenefitsSummary, MemberOut, TierBody
from touchstone.vocabulary import TIERS

router = APIRouter(prefix="/v1/members", tags=["members"])

MemberId = Path(..., min_length=1, max_length=64)


@router.put("/{member_id}", response_model=MemberOut)
async def set_tier(
    body: TierBody,
    benefits: BenefitsDep,
    _: PlatformCaller,
    member_id: str = MemberId,
) -> MemberOut:
    """Set the member's tier, the only way a tier is set: it decides their next submissions
    (each appraisal keeps the tier it was submitted at) and, with its history, the month's
    free appraisals. The first call announces the member (a welcome tier's joining coupon)."""
    if body.tier not in TIERS:
        raise ApiError(422, "invalid_field", f"tier must be one of {', '.join(TIERS)}")
    return await to_thread(benefits.set_tier, member_id, body.tier)


@router.get("/{member_id}/benefits", response_model=BenefitsSummary)
async def member_benefits(
    benefits: BenefitsDep,
    caller: MemberReader,
    member_id: str = MemberId,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    month: str | None = Query(None, description="YYYY-MM: whose free appraisals (default: now)"),
) -> BenefitsSummary:
    """A month's free appraisals left (this month's by default), coupons, points (and what
    expires next), and the ledger, newest first."""
    caller.acting_for(member_id)  # an app key: its member token's member alone
    try:
        answer = await to_thread(benefits.summary, member_id, limit, offset, None, month)
    except InvalidMonth as exc:
        raise ApiError(422, "invalid_month", str(exc)) from exc
    if answer is None:
        raise ApiError(404, "not_found", f"no member {member_id}")
    return answer


async def submission_tier(benefits: BenefitsService, member_id: str, claimed: str | None) -> str:
    """The tier a submission is paid, routed and timed at: the member's as the platform set it
    (explorer if it never did). A form's `member_tier` may be left out; one that disagrees is
    refused (409 `tier_mismatch`) rather than believed or quietly replaced."""
    if claimed is not None and claimed not in TIERS:
        raise ApiError(422, "invalid_field", f"member_tier must be one of {', '.join(TIERS)}")
    tier = await to_thread(benefits.tier_of, member_id)
    if claimed is not None and claimed != tier:
        raise ApiError(
            409,
            "tier_mismatch",
            f"member {member_id} is a {tier} member (the membership platform's word), "
            f"not {claimed}; leave member_tier out",
        )
    return tier
