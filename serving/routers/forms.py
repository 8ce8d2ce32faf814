"""Reading the multipart uploads of the appraisal routes: fields and photo parts named by
region, with each refusal's stable code."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from serving.appraisals.uploads import PhotoUpload
from serving.db import Appraisal
from serving.errors import ApiError

FIELDS = ("member_id", "member_tier", "category", "brand", "declared_value")
MAX_FIELD_CHARS = 64
# A field stored in a column may be no longer than the column: PostgreSQL refuses longer values
# (a 500), SQLite keeps them. The widths are read from the model, so they cannot drift.
FIELD_CHARS = {
    name: Appraisal.__table__.c[name].type.length
    for name in ("member_id", "member_tier", "category", "brand")
}


async def read_form(
    request: Request,
    regions: tuple[str, ...],
    max_photos: int,
    max_photo_bytes: int,
    extra: tuple[str, ...] = (),
) -> tuple[dict[str, str], list[PhotoUpload]]:
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
    except ClientDisconnect as exc:
        # The client went away mid-body, or stalled past the body deadline (whose 408 then
        # replaces this answer: serving/slow_clients.py).
        raise ApiError(400, "client_disconnected", "the request body stopped arriving") from exc
    fields: dict[str, str] = {}
    photos: list[PhotoUpload] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            photos.append(await _photo(name, value, regions, max_photo_bytes))
        elif name in FIELDS or name in extra:
            if name in fields:
                raise ApiError(422, "invalid_field", f"{name} is given twice")
            fields[name] = value
        else:
            raise ApiError(422, "invalid_field", f"unknown form field {name!r}")
    return fields, photos


async def _photo(name: str, value: UploadFile, regions: tuple[str, ...], limit: int) -> PhotoUpload:
    if name not in regions:
        raise ApiError(
            422,
            "unknown_region",
            f"photo part {name!r} is not a region; regions: {', '.join(regions)}",
        )
    if value.size is not None and value.size > limit:
        raise ApiError(413, "photo_too_large", f"a {name} photo is over {limit // 2**20} MiB")
    return PhotoUpload(name, await value.read())


def text_field(fields: dict[str, str], name: str, required: bool = True) -> str | None:
    value = (fields.get(name) or "").strip()
    if not value:
        if required:
            raise ApiError(422, "missing_field", f"the form field {name!r} is required")
        return None
    limit = FIELD_CHARS.get(name) or MAX_FIELD_CHARS
    # Lower-cased too: the category is stored lower-cased, and a few letters grow when lowered
    # ("\u0130" becomes two characters).
    if max(len(value), len(value.lower())) > limit or not value.isprintable():
        raise ApiError(422, "invalid_field", f"{name} must be printable, up to {limit} characters")
    return value


def declared_value(fields: dict[str, str]) -> float | None:
    text = text_field(fields, "declared_value", required=False)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise ApiError(422, "invalid_field", "declared_value must be a number (CNY)") from exc
    if not 0 <= value < 1e12:
        raise ApiError(422, "invalid_field", "declared_value must be >= 0 (CNY)")
    return value


def check_photo_counts(photos: list[PhotoUpload], most: int, per_region: int) -> None:
    if not photos:
        raise ApiError(422, "no_photos", "an appraisal needs photos, one part per photo")
    if len(photos) > most:
        raise ApiError(422, "too_many_photos", f"at most {most} photos per request")
    for region in {p.region for p in photos}:
        if sum(p.region == region for p in photos) > per_region:
            raise ApiError(
                422, "too_many_photos", f"at most {per_region} photos of the {region} region"
            )
