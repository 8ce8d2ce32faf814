"""A certificate as anyone holding its code sees it, and the chain's signed head."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class CertificateView(BaseModel):
    seq: int
    code: str
    # What a buyer needs: the outcome, the item, its photo hashes, the dates, the model's
    # version, the code this one supersedes. Never a member, a reviewer or the routing rule.
    body: dict[str, Any]
    # True for an old (version 1) body, which held more than this shows: its hash can only be
    # checked by the service (hash_matches) or from an export; otherwise the body is the one
    # hashed, and anyone can recompute the link from it.
    redacted: bool
    prev_hash: str
    hash: str
    created_at: str | None
    hash_matches: bool  # the stored hash still matches the certificate's content
    superseded_by: str | None  # the later certificate of the same item that replaces this one
    canonical_form: str = (
        "sha256 of JSON {seq, code, body, prev_hash}, keys sorted, separators (',', ':'), UTF-8"
    )


class ChainHead(BaseModel):
    """The newest link of the chain, signed: keep one elsewhere, and `touchstone certificates
    verify --head` proves later that nothing up to it was rewritten."""

    seq: int  # 0: the chain is empty
    code: str | None
    hash: str  # 64 zeros when the chain is empty
    created_at: str | None  # when that certificate was issued
    signed_at: str
    signed: bool  # false: no key is configured, so this head proves nothing about its source
    key_id: str | None  # the first 16 hex digits of sha256 of the raw Ed25519 public key
    signature: str | None  # base64 Ed25519 signature of `signed_form`
    signed_form: str = (
        'canonical JSON {"purpose": "touchstone certificate chain head", "seq", "code", "hash", '
        '"signed_at"}: keys sorted, separators (",", ":"), UTF-8'
    )
