"""`/v1/appraisals`: what the appraisal app calls, and a senior's correction of a verdict."""

from __future__ import annotations

from asyncio import to_thread

from fastapi import APIRouter, Header, Path, Query, Request, Response

from serving.appraisals.uploads import AppraisalRequest, check_idempotency_key
from serving.deps import (
    AnyRole,
    AppCaller,
    AppraisalsDep,
    MemberReader,
    RegionsDep,
    SeniorOrAdmin,
    SettingsDep,
)
from serving.errors import ApiError
from serving.routers.forms import check_photo_counts, declared_value, read_form, text_field
from serving.schemas.appraisals import AppraisalOut, AppraisalPage
from serving.schemas.members import OverturnBody, OverturnOut

router = APIRouter(prefix="/v1/appraisals", tags=["appraisals"])


@router.post("", status_code=201, response_model=AppraisalOut)
async def submit_appraisal(
    request: Request,
    response: Response,
    appraisals: AppraisalsDep,
    settings: SettingsDep,
    regions: RegionsDep,
    _: AppCaller,
    idempotency_key: str | None = Header(None),
) -> AppraisalOut:
    """Submit an item: member fields and photos named by region (several per region)."""
    policy = appraisals.policy
    key = check_idempotency_key(idempotency_key)
    fields, photos = await read_form(request, regions, policy.max_photos, settings.max_photo_bytes)
    tier = text_field(fields, "member_tier")
    if tier not in policy.tiers:
        raise ApiError(
            422, "invalid_field", f"member_tier must be one of {', '.join(policy.tiers)}"
        )
    value = declared_value(fields)
    check_photo_counts(photos, policy.max_photos, policy.max_photos_per_region)
    appraisal, created = await appraisals.create(
        AppraisalRequest(
            member_id=text_field(fields, "member_id"),  # type: ignore[arg-type]
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
    return AppraisalOut.of(appraisal)


@router.get("/{appraisal_id}", response_model=AppraisalOut)
async def get_appraisal(appraisal_id: str, appraisals: AppraisalsDep, _: AnyRole) -> AppraisalOut:
    return AppraisalOut.of(await to_thread(appraisals.get, appraisal_id))


@router.get("", response_model=AppraisalPage)
async def list_appraisals(
    appraisals: AppraisalsDep,
    _: MemberReader,
    member_id: str = Query(..., min_length=1, max_length=64),
    limit: int = Query(20, ge=1, le=100),
    offset: int = Query(0, ge=0),
) -> AppraisalPage:
    """A member's appraisals, newest first."""
    rows = await to_thread(appraisals.list_for_member, member_id, limit + 1, offset)
    return AppraisalPage(
        items=[AppraisalOut.of(a) for a in rows[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(rows) > limit else None,
    )


@router.post("/{appraisal_id}/photos", response_model=AppraisalOut)
async def add_photos(
    appraisal_id: str,
    request: Request,
    appraisals: AppraisalsDep,
    settings: SettingsDep,
    regions: RegionsDep,
    _: AppCaller,
) -> AppraisalOut:
    """More photos for an appraisal that is `awaiting_photos`."""
    policy = appraisals.policy
    fields, photos = await read_form(request, regions, policy.max_photos, settings.max_photo_bytes)
    if fields:
        raise ApiError(422, "invalid_field", "send only photo parts here")
    check_photo_counts(photos, policy.max_photos, policy.max_photos_per_region)
    return AppraisalOut.of(await appraisals.add_photos(appraisal_id, photos))


@router.post("/{appraisal_id}/human-review", response_model=AppraisalOut)
async def ask_for_a_person(
    appraisal_id: str, appraisals: AppraisalsDep, _: AppCaller
) -> AppraisalOut:
    """The member asks a person to review an automated decision (PIPL art. 24)."""
    return AppraisalOut.of(await appraisals.request_human_review(appraisal_id))


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
