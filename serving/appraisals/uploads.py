"""An upload as the appraisal service takes it: the member's fields, photo parts named by
region, and the idempotency key that makes a retried upload return the first appraisal; then
its photos decoded no larger than the model and the checks need, and checked
(`prepare_photos`), while the memory that takes is held (`decoded_photos`); the uploads stored
without metadata once accepted (`store_photos`), deleted again if they then fail to commit
(`discard_unreferenced`), and their rows."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from serving.appraisals.memory import BYTES_PER_PIXEL, STRIP_BYTES_PER_PIXEL, MemoryBudget
from serving.db import Photo
from serving.errors import ApiError
from serving.photos import PhotoStore, StoredPhoto
from serving.policy.config import PolicyConfig
from serving.policy.photo_quality import assess_photo
from serving.runtime import ModelRuntime
from touchstone.decision import photo_probability
from touchstone.imaging import (
    PhotoError,
    decode_reduced,
    photo_pixels,
    reduced_pixels,
    sniff_format,
)
from touchstone.preprocessing import shorter_side

log = logging.getLogger("touchstone.serving")
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:\-]{8,255}$")


@dataclass
class PhotoUpload:
    region: str
    data: bytes
    image: Image.Image | None = None  # decoded reduced (`decode_side`); dropped once stored
    width: int = 0  # the photo's upright size at full resolution
    height: int = 0
    stored: StoredPhoto | None = None
    usable: bool = True
    problems: list[str] = field(default_factory=list)
    log_odds: float | None = None


@dataclass
class AppraisalRequest:
    member_id: str
    member_tier: str
    category: str
    brand: str | None
    declared_value: float | None
    photos: list[PhotoUpload]
    idempotency_key: str | None

    def fingerprint(self) -> str:
        """What makes two uploads the same request: fields and photo bytes, in order."""
        body = {
            "member_id": self.member_id,
            "member_tier": self.member_tier,
            "category": self.category,
            "brand": self.brand,
            "declared_value": self.declared_value,
            "photos": [(p.region, hashlib.sha256(p.data).hexdigest()) for p in self.photos],
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not IDEMPOTENCY_KEY.match(value):
        raise ApiError(
            422,
            "invalid_idempotency_key",
            "Idempotency-Key must be 8 to 255 characters of letters, digits and . _ : -",
        )
    return value


def decode_side(runtime: ModelRuntime | None, policy: PolicyConfig) -> int:
    """The shorter side photos are decoded down to: the model's `shorter_side`, so that it sees
    the pixels it was trained and evaluated on (the same `decode_reduced`). Without a model,
    the quality checks' own side: they measure sharpness `sharpness_side_px` on the longer side,
    and a shorter side that long keeps the longer one at least that long whatever the aspect."""
    if runtime is not None:
        return shorter_side(runtime.model.preprocessing)
    return policy.photo_quality.sharpness_side_px


@contextlib.asynccontextmanager
async def decoded_photos(
    photos: list[PhotoUpload],
    budget: MemoryBudget,
    policy: PolicyConfig,
    max_pixels: int,
    min_side: int,
) -> AsyncIterator[None]:
    """The photos decoded (down to `min_side`, see `decode_side`) and assessed
    (`prepare_photos`) for the block, with the memory they take reserved from `budget` first
    (reckoned from their headers) and held until the block ends, their pixels dropped before it
    is given back. A photo whose header is refused is refused as `prepare_photos` would; photos
    that together need more than the whole budget are a 413 `over_decode_memory`."""

    def size() -> int:
        total = 0
        for photo in photos:
            try:
                total += reduced_pixels(photo.data, min_side, max_pixels=max_pixels) * (
                    BYTES_PER_PIXEL
                )
                if sniff_format(photo.data[:64]) == "HEIF":  # the store decodes it whole again
                    total += photo_pixels(photo.data, max_pixels=max_pixels) * (
                        STRIP_BYTES_PER_PIXEL
                    )
            except PhotoError as exc:
                raise _refusal(photo, exc) from exc
        return total

    size = await asyncio.to_thread(size)
    if size > budget.total:
        raise ApiError(
            413,
            "over_decode_memory",
            f"these photos take {size / 2**20:,.0f} MiB decoded; the service decodes at most "
            f"{budget.total / 2**20:,.0f} MiB at once: send fewer or smaller photos",
        )
    async with budget.reserve(size):
        try:
            await prepare_photos(photos, policy, max_pixels, min_side)
            yield
        finally:
            for photo in photos:
                photo.image = None


async def prepare_photos(
    photos: list[PhotoUpload], policy: PolicyConfig, max_pixels: int, min_side: int
) -> None:
    """Decode each photo down to `min_side` and assess it; any undecodable photo refuses the
    upload. Nothing is written here: an upload may still be refused after this (by the model's
    queue, a conflict), and a file no appraisal points at is one erasure never finds."""

    def one(photo: PhotoUpload) -> None:
        try:
            reduced = decode_reduced(photo.data, min_side, max_pixels=max_pixels)
        except PhotoError as exc:
            raise _refusal(photo, exc) from exc
        photo.image, photo.width, photo.height = reduced.image, reduced.width, reduced.height
        quality = assess_photo(photo.image, policy, full_size=(photo.width, photo.height))
        photo.usable, photo.problems = quality.usable, list(quality.problems)

    await _each(one, photos)


async def store_photos(photos: list[PhotoUpload], store: PhotoStore, max_pixels: int) -> None:
    """Store each upload without its metadata (fsynced), once the upload is accepted and
    before its row commits, so a committed row never points at a missing file. The store works
    from the upload's bytes: the reduced decode is not the photo a reviewer sees."""

    def one(photo: PhotoUpload) -> None:
        photo.image = None  # its pixels are not needed any more: free them first
        try:
            photo.stored = store.put(photo.data, max_pixels=max_pixels)
        except PhotoError as exc:  # a file structure the decoder let pass, the strip does not
            raise _refusal(photo, exc) from exc

    await _each(one, photos)


def _refusal(photo: PhotoUpload, exc: PhotoError) -> ApiError:
    status = {"too_many_pixels": 413, "unsupported_image_format": 415}.get(exc.code, 422)
    return ApiError(status, exc.code, f"{photo.region} photo: {exc}")


def discard_unreferenced(
    sessions: sessionmaker, store: PhotoStore, photos: list[PhotoUpload]
) -> None:
    """After an upload failed to commit: delete the files stored for it, except those a
    committed photo row references (the store is content-addressed, so another appraisal may
    hold the same bytes). When the database cannot say, the files stay, for the orphan sweep."""
    addresses = {p.stored.sha256 for p in photos if p.stored is not None}
    if not addresses:
        return
    try:
        with sessions() as session:
            held = set(session.scalars(select(Photo.sha256).where(Photo.sha256.in_(addresses))))
    except Exception:
        log.exception("could not tell which stored photos are unreferenced; left in place")
        return
    for sha256 in sorted(addresses - held):
        store.delete(sha256)


async def _each(work: Callable[[PhotoUpload], None], photos: list[PhotoUpload]) -> None:
    """`work` on every photo in threads; every one finishes before the first error is raised,
    so nothing is still being written when the caller cleans up after a refusal."""
    results = await asyncio.gather(
        *(asyncio.to_thread(work, p) for p in photos), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result


def photo_rows(photos: list[PhotoUpload], round_: int, runtime: ModelRuntime | None) -> list[Photo]:
    temperature = runtime.card.calibration.photo.temperature if runtime else None
    rows = []
    for photo in photos:
        assert photo.stored is not None
        rows.append(
            Photo(
                round=round_,
                region=photo.region,
                sha256=photo.stored.sha256,
                upload_sha256=photo.stored.upload_sha256,
                width=photo.width,
                height=photo.height,
                usable=photo.usable,
                problems=photo.problems,
                log_odds=photo.log_odds,
                p_authentic=(
                    float(photo_probability(photo.log_odds, temperature))
                    if photo.log_odds is not None and temperature
                    else None
                ),
            )
        )
    return rows
