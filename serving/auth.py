"""API keys with roles. A key is `tsk_<prefix>_<secret>`: the prefix finds the row, the secret
is kept only as its sha256 (keys are 32 random bytes, so a plain hash is enough; no password
stretching needed), compared in constant time. A key may carry an expiry, and is revoked by
its prefix; either takes effect on its next request (the row is read on every one).

An `app` key alone acts for nobody: each call also carries a member token
(`serving/member_tokens.py`), and the caller then acts for that member alone. A
`member_backend` key belongs to a trusted back end that acts for many members and names one
per call."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.db import ApiKey, as_utc, utcnow
from serving.errors import ApiError

ROLES: tuple[str, ...] = ("app", "member_backend", "platform", "reviewer", "senior", "admin")
# Who acts for members, and so sees appraisals as the member does: outcome and findings in
# words, never the model's scores (a score would let a counterfeiter re-shoot until it passes).
MEMBER_ROLES = ("app", "member_backend")
# Who sees the whole appraisal, scores and routing rule included.
FULL_VIEW_ROLES = ("platform", "admin")
# Who sees the model's thresholds: the full-view roles, and reviewers, who see the scores of
# the tasks that are not blind and read them against the thresholds.
THRESHOLD_ROLES = ("platform", "admin", "reviewer", "senior")


@dataclass(frozen=True)
class Caller:
    key_id: int
    role: str
    # The member a member token named (the `app` role): the call acts for that member alone.
    member_id: str | None = None

    def acting_for(self, named: str | None) -> str:
        """The member this call acts for: the token's (naming another is 403), else the one the
        caller names (required)."""
        if self.member_id is None:
            if not named:
                raise ApiError(422, "missing_field", "name the member: member_id is required")
            return named
        if named and named != self.member_id:
            raise ApiError(403, "member_mismatch", "the member token is for another member")
        return self.member_id

    def may_see(self, member_id: str) -> bool:
        """Whether an appraisal or benefits of `member_id` are this caller's to see."""
        return self.member_id is None or self.member_id == member_id

    @property
    def sees_scores(self) -> bool:
        return self.role in FULL_VIEW_ROLES


def create_key(
    session: Session,
    role: str,
    label: str | None = None,
    expires_at: dt.datetime | None = None,
) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    session.add(
        ApiKey(
            prefix=prefix,
            secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
            role=role,
            label=label,
            expires_at=expires_at,
        )
    )
    session.commit()
    return f"tsk_{prefix}_{secret}"


def refusal(key: ApiKey | None, now: dt.datetime | None = None) -> str | None:
    """Why this key may not be used now (unknown, revoked, expired), or None if it may."""
    if key is None:
        return "unknown or revoked API key"
    if key.revoked_at is not None:
        return "unknown or revoked API key"
    if key.expires_at is not None and as_utc(key.expires_at) <= (now or utcnow()):
        return "expired API key"
    return None


def authenticate(session: Session, header: str | None, now: dt.datetime | None = None) -> Caller:
    if not header or not header.startswith("Bearer "):
        raise ApiError(401, "unauthenticated", "send an API key: Authorization: Bearer KEY")
    token = header.removeprefix("Bearer ").strip()
    # The prefix is hex; the secret may itself hold `_`, so split twice only.
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "tsk":
        raise ApiError(401, "unauthenticated", "malformed API key")
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    digest = hashlib.sha256(parts[2].encode()).hexdigest()
    if key is None or not hmac.compare_digest(digest, key.secret_sha256):
        raise ApiError(401, "unauthenticated", "unknown or revoked API key")
    problem = refusal(key, now)
    if problem:
        raise ApiError(401, "unauthenticated", problem)
    return Caller(key.id, key.role)


def list_keys(session: Session) -> list[ApiKey]:
    """Every key, oldest first (rows: the secrets are not in them)."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(session: Session, prefix: str, now: dt.datetime | None = None) -> ApiKey | None:
    """Revoke the key with this prefix (again is a no-op); None if there is none."""
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is not None and key.revoked_at is None:
        key.revoked_at = now or utcnow()
        session.commit()
    return key
