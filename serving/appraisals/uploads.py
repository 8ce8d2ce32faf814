"""An upload as the appraisal service takes it: the member's fields, photo parts named by
region, and the idempotency key that makes a retried upload return the first appraisal."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from PIL import Image

from serving.errors import ApiError
from serving.photos import StoredPhoto

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
