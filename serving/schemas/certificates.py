"""A certificate as anyone holding its code sees it (no member id: the body has none)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class CertificateView(BaseModel):
    seq: int
    code: str
    body: dict[str, Any]
    prev_hash: str
    hash: str
    created_at: str | None
    hash_matches: bool  # the stored hash still matches the certificate's content
    superseded_by: str | None  # a later certificate of the same appraisal
    canonical_form: str = (
        "sha256 of JSON {seq, code, body, prev_hash}, keys sorted, separators (',', ':'), UTF-8"
    )
