"""API keys with roles. A key is `tsk_<prefix>_<secret>`: the prefix finds the row, the secret
is kept only as its sha256 (keys are 32 random bytes, so a plain hash is enough; no password
stretching needed), compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.db import ApiKey
from serving.errors import ApiError

ROLES: tuple[str, ...] = ("app", "platform", "reviewer", "senior", "admin")


@dataclass(frozen=True)
class Caller:
    key_id: int
    role: str


def create_key(session: Session, role: str, label: str | None = None) -> str:
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
        )
    )
    session.commit()
    return f"tsk_{prefix}_{secret}"


def authenticate(session: Session, header: str | None) -> Caller:
    if not header or not header.startswith("Bearer "):
        raise ApiError(401, "unauthenticated", "send an API key: Authorization: Bearer KEY")
    token = header.removeprefix("Bearer ").strip()
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "tsk":
        raise ApiError(401, "unauthenticated", "malformed API key")
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == parts[1]))
    digest = hashlib.sha256(parts[2].encode()).hexdigest()
    if (
        key is None
        or key.revoked_at is not None
        or not hmac.compare_digest(digest, key.secret_sha256)
    ):
        raise ApiError(401, "unauthenticated", "unknown or revoked API key")
    return Caller(key.id, key.role)
