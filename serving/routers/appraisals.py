"""`/v1/appraisals`: what the appraisal app calls."""

from __future__ import annotations

from asyncio import to_thread
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from serving.appraisals.service import AppraisalService
from serving.appraisals.uploads import AppraisalRequest, PhotoUpload, check_idempotency_key
from serving.auth import Caller, require
from serving.errors import ApiError
from serving.schemas import AppraisalOut, AppraisalPage

router = APIRouter(prefix="/v1/appraisals", tags=["appraisals"])

FIELDS = ("member_id", "member_tier", "category", "brand", "declared_value")
MAX_FIELD_CHARS = 64


def service(request: Request) -> AppraisalService:
    return request.app.state.appraisals


Service = Annotated[AppraisalService, Depends(service)]


async def read_form(
    request: Request, regions: tuple[str, ...], max_photos: int, extra: tuple[str, ...] = ()
):
    """Parse the multipart body: fields (`FIELDS` and `extra`), and photo parts named by
    region."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            415, "unsupported_media_type", "send multipart/form-data: fields and photo parts"
        )
    try:
        form = await request.form(max_files=max_photos + 1, max_fields=len(FIELDS) + 4)
    except MultiPartException as exc:
        code = "too_many_photos" if "files" in str(exc).lower() else "malformed_request"
        raise ApiError(422 if code == "too_many_photos" else 400, code, str(exc)) from exc
    fields: dict[str, str] = {}
    photos: list[PhotoUpload] = []
    limit = request.app.state.settings.max_photo_bytes
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if name not in regions:
                raise ApiError(
                    422,
                    "unknown_region",
                    f"photo part {name!r} is not a region; regions: {', '.join(regions)}",
                )
            if value.size is not None and value.size > limit:
                raise ApiError(
                    413, "photo_too_large", f"a {name} photo is over {limit // 2**20} MiB"
                )
            photos.append(PhotoUpload(name, await value.read()))
        elif name in FIELDS or name in extra:
            if name in fields:
                raise ApiError(422, "invalid_field", f"{name} is given twice")
            fields[name] = value
        else:
            raise ApiError(422, "invalid_field", f"unknown form field {name!r}")
    return fields, photos


def _text(fields: dict[str, str], name: str, required: bool = True) -> str | None:
    value = (fields.get(name) or "").strip()
    if not value:
        if required:
            raise ApiError(422, "missing_field", f"the form field {name!r} is required")
        return None
    if len(value) > MAX_FIELD_CHARS or not value.isprintable():
        raise ApiError(422, "invalid_field", f"{name} must be printable, up to 64 characters")
    return value


@router.post("", status_code=201, response_model=AppraisalOut)
async def submit_appraisal(
    request: Request, response: Response, appraisals: Service, _: Caller = Depends(require("app"))
) -> AppraisalOut:
    """Submit an item: member fields and photos named by region (several per region)."""
    policy = appraisals.policy
    key = check_idempotency_key(request.headers.get("idempotency-key"))
    fields, photos = await read_form(request, request.app.state.regions(), policy.max_photos)
    tier = _text(fields, "member_tier")
    if tier not in policy.tiers:
        raise ApiError(
            422, "invalid_field", f"member_tier must be one of {', '.join(policy.tiers)}"
        )
    declared = _text(fields, "declared_value", required=False)
    value = None
    if declared is not None:
        try:
            value = float(declared)
        except ValueError as exc:
            raise ApiError(422, "invalid_field", "declared_value must be a number (CNY)") from exc
        if not 0 <= value < 1e12:
            raise ApiError(422, "invalid_field", "declared_value must be >= 0 (CNY)")
    _check_photo_counts(photos, policy.max_photos, policy.max_photos_per_region)
    appraisal, created = await appraisals.create(
        AppraisalRequest(
            member_id=_text(fields, "member_id"),  # type: ignore[arg-type]
            member_tier=tier,  # type: ignore[arg-type]
            category=_text(fields, "category").lower(),  # type: ignore[union-attr]
            brand=_text(fields, "brand", required=False),
            declared_value=value,
            photos=photos,
            idempotency_key=key,
        )
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return AppraisalOut.of(appraisal)


def _check_photo_counts(photos: list[PhotoUpload], most: int, per_region: int) -> None:
    if not photos:
        raise ApiError(422, "no_photos", "an appraisal needs photos, one part per photo")
    if len(photos) > most:
        raise ApiError(422, "too_many_photos", f"at most {most} photos per request")
    for region in {p.region for p in photos}:
        if sum(p.region == region for p in photos) > per_region:
            raise ApiError(
                422, "too_many_photos", f"at most {per_region} photos of the {region} region"
            )


@router.get("/{appraisal_id}", response_model=AppraisalOut)
async def get_appraisal(
    appraisal_id: str,
    appraisals: Service,
    _: Caller = Depends(require("app", "platform", "reviewer", "senior", "admin")),
) -> AppraisalOut:
    return AppraisalOut.of(await to_thread(appraisals.get, appraisal_id))


@router.get("", response_model=AppraisalPage)
async def list_appraisals(
    appraisals: Service,
    member_id: str = Query(..., min_length=1, max_length=64),
    limit: int = Query(20, ge=1, le=100),
    offset: int = Query(0, ge=0),
    _: Caller = Depends(require("app", "platform", "admin")),
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
    appraisals: Service,
    _: Caller = Depends(require("app")),
) -> AppraisalOut:
    """More photos for an appraisal that is `awaiting_photos`."""
    policy = appraisals.policy
    fields, photos = await read_form(request, request.app.state.regions(), policy.max_photos)
    if fields:
        raise ApiError(422, "invalid_field", "send only photo parts here")
    _check_photo_counts(photos, policy.max_photos, policy.max_photos_per_region)
    return AppraisalOut.of(await appraisals.add_photos(appraisal_id, photos))


@router.post("/{appraisal_id}/human-review", response_model=AppraisalOut)
async def ask_for_a_person(
    appraisal_id: str, appraisals: Service, _: Caller = Depends(require("app"))
) -> AppraisalOut:
    """The member asks a person to review an automated decision (PIPL art. 24)."""
    return AppraisalOut.of(await appraisals.request_human_review(appraisal_id))
