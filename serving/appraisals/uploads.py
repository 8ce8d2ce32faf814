"""An upload as the appraisal service takes it: the member's fields, photo parts named by
region, and the idempotency key that makes a retried upload return the first appraisal; then
its photos decoded, stored without metadata and checked (`prepare_photos`), and their rows."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass, field

from PIL import Image

from serving.db import Photo
from serving.errors import ApiError
from serving.photos import PhotoStore, StoredPhoto
from serving.policy.config import PolicyConfig
from serving.policy.photo_quality import assess_photo
from serving.runtime import ModelRuntime
from touchstone.decision import photo_probability
from touchstone.imaging import PhotoError, decode_photo

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:\-]{8,255}$")


@dataclass
class PhotoUpload:
    region: str
    data: bytes
    image: Image.Image | None = None
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


async def prepare_photos(
    photos: list[PhotoUpload], store: PhotoStore, policy: PolicyConfig, max_pixels: int
) -> None:
    """Decode, store and assess each photo; any undecodable photo refuses the upload."""

    def one(photo: PhotoUpload) -> None:
        try:
            photo.image = decode_photo(photo.data, max_pixels=max_pixels)
        except PhotoError as exc:
            status = 413 if exc.code == "too_many_pixels" else 422
            raise ApiError(status, exc.code, f"{photo.region} photo: {exc}") from exc
        photo.stored = store.put(photo.data, photo.image)
        quality = assess_photo(photo.image, policy)
        photo.usable, photo.problems = quality.usable, list(quality.problems)

    await asyncio.gather(*(asyncio.to_thread(one, p) for p in photos))


def photo_rows(photos: list[PhotoUpload], round_: int, runtime: ModelRuntime | None) -> list[Photo]:
    temperature = runtime.card.calibration.photo.temperature if runtime else None
    rows = []
    for photo in photos:
        assert photo.stored is not None and photo.image is not None
        rows.append(
            Photo(
                round=round_,
                region=photo.region,
                sha256=photo.stored.sha256,
                upload_sha256=photo.stored.upload_sha256,
                width=photo.image.width,
                height=photo.image.height,
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
