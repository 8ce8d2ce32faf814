"""`/v1/appraisals`: what the appraisal app calls, and a senior's correction of a verdict.

Member-facing routes act for one member: the member token's for an `app` key (another
member's appraisal is 404, as if it did not exist), the one named per call for a member back
end. Members see the member view (no scores); the platform and admins the whole appraisal;
reviewers none (they see items through their tasks)."""

from __future__ import annotations

from asyncio import to_thread

from fastapi import APIRouter, Header, Path, Query, Request, Response

from serving.appraisals.rate_limit import check_submission_rate
from serving.appraisals.service import AppraisalService
from serving.appraisals.uploads import AppraisalRequest, check_idempotency_key
from serving.auth import Caller
from serving.db import Appraisal
from serving.deps import (
    AppraisalsDep,
    BenefitsDep,
    MemberActor,
    MemberReader,
    RegionsDep,
    SeniorOrAdmin,
    SessionsDep,
    SettingsDep,
)
from serving.errors import ApiError
from serving.routers.forms import check_photo_counts, declared_value, read_form, text_field
from serving.routers.members import submission_tier
from serving.schemas.appraisals import AppraisalPage, AppraisalView
from serving.schemas.members import OverturnBody, OverturnOut

router = APIRouter(prefix="/v1/appraisals", tags=["appraisals"])


async def _owned(appraisals: AppraisalService, caller: Caller, appraisal_id: str) -> Appraisal:
    """The appraisal, if the caller may see it; 404 otherwise, so as not to confirm that
    another member's exists. Gold items are no member's."""
    appraisal = await to_thread(appraisals.get, appraisal_id)
    if not caller.sees_scores and (appraisal.is_gold or not caller.may_see(appraisal.member_id)):
        raise ApiError(404, "not_found", f"no appraisal {appraisal_id}")
    return appraisal


@router.post("", status_code=201, response_model=AppraisalView)
async def submit_appraisal(
    request: Request,
    response: Response,
    appraisals: AppraisalsDep,
    settings: SettingsDep,
    sessions: SessionsDep,
    regions: RegionsDep,
    benefits: BenefitsDep,
    caller: MemberActor,
    idempotency_key: str | None = Header(None),
) -> AppraisalView:
    """Submit an item: member fields and photos named by region (several per region)."""
    policy = appraisals.policy
    key = check_idempotency_key(idempotency_key)
    fields, photos = await read_form(request, regions, policy.max_photos, settings.max_photo_bytes)
    member = caller.acting_for(text_field(fields, "member_id", required=False))
    await to_thread(
        check_submission_rate, sessions, member, settings.member_submissions_per_hour, key
    )
    # The tier is the membership platform's; the form may only repeat it (or leave it out).
    claimed_tier = text_field(fields, "member_tier", required=False)
    tier = await submission_tier(benefits, member, claimed_tier)
    value = declared_value(fields)
    check_photo_counts(photos, policy.max_photos, policy.max_photos_per_region)
    appraisal, created = await appraisals.create(
        AppraisalRequest(
            member_id=member,
            member_tier=tier,
            category=text_field(fields, "category").lower(),  # type: ignore[union-attr]
            brand=text_field(fields, "brand", required=False),
            declared_value=value,
            photos=photos,
            idempotency_key=key,
        )
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return AppraisalView.of(appraisal, caller.sees_scores)


@router.get("/{appraisal_id}", response_model=AppraisalView)
async def get_appraisal(
    appraisal_id: str, appraisals: AppraisalsDep, caller: MemberReader
) -> AppraisalView:
    """One appraisal: the member's view, or the whole of it for the platform and admins."""
    return AppraisalView.of(await _owned(appraisals, caller, appraisal_id), caller.sees_scores)


@router.get("", response_model=AppraisalPage)
async def list_appraisals(
    appraisals: AppraisalsDep,
    caller: MemberReader,
    member_id: str | None = Query(None, min_length=1, max_length=64),
    limit: int = Query(20, ge=1, le=100),
    offset: int = Query(0, ge=0),
) -> AppraisalPage:
    """A member's appraisals, newest first (an app key's: its member token's)."""
    member = caller.acting_for(member_id)
    rows = await to_thread(appraisals.list_for_member, member, limit + 1, offset)
    return AppraisalPage(
        items=[AppraisalView.of(a, caller.sees_scores) for a in rows[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(rows) > limit else None,
    )


@router.post("/{appraisal_id}/photos", response_model=AppraisalView)
async def add_photos(
    appraisal_id: str,
    request: Request,
    appraisals: AppraisalsDep,
    settings: SettingsDep,
    regions: RegionsDep,
    caller: MemberActor,
) -> AppraisalView:
    """More photos for an appraisal that is `awaiting_photos`."""
    await _owned(appraisals, caller, appraisal_id)
    policy = appraisals.policy
    fields, photos = await read_form(request, regions, policy.max_photos, settings.max_photo_bytes)
    if fields:
        raise ApiError(422, "invalid_field", "send only photo parts here")
    check_photo_counts(photos, policy.max_photos, policy.max_photos_per_region)
    return AppraisalView.of(await appraisals.add_photos(appraisal_id, photos), caller.sees_scores)


@router.post("/{appraisal_id}/human-review", response_model=AppraisalView)
async def ask_for_a_person(
    appraisal_id: str, appraisals: AppraisalsDep, caller: MemberActor
) -> AppraisalView:
    """The member asks a person to review an automated decision (PIPL art. 24)."""
    await _owned(appraisals, caller, appraisal_id)
    appraisal = await appraisals.request_human_review(appraisal_id)
    return AppraisalView.of(appraisal, caller.sees_scores)


@router.post("/{appraisal_id}/overturn", response_model=OverturnOut, tags=["members"])
async def overturn_verdict(
    body: OverturnBody,
    appraisals: AppraisalsDep,
    caller: SeniorOrAdmin,
    appraisal_id: str = Path(..., min_length=1, max_length=36),
) -> OverturnOut:
    """Correct a final verdict (appeal, dispute, QC re-review): the outcome changes, the change
    is logged, and the member is compensated by policy (`configs/benefits.yaml`)."""
    appraisal = await to_thread(
        appraisals.overturn, appraisal_id, body.outcome, body.reason, caller.key_id
    )
    return OverturnOut(id=appraisal.id, status=appraisal.status, outcome=appraisal.outcome)
