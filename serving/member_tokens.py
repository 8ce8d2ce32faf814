"""Member tokens: how the members' app proves which member it calls for.

The membership platform signs a short-lived JWT for a signed-in member (`sub` = member id,
`exp`, and `iat`); the app sends it with each call in the `X-Member-Token` header next to its
`app` key, and Touchstone then acts on that member's appraisals and benefits alone. Tokens are
verified offline against the platform's public key (a PEM file) or key set (a JWKS file, keys
picked by `kid`), read once at start: nothing is fetched at run time. Only asymmetric
algorithms are accepted, so holding the public key never lets anyone make a token.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from serving.errors import ApiError

HEADER = "X-Member-Token"
ASYMMETRIC = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
MAX_MEMBER_ID = 64  # the appraisals' member_id column


class MemberTokenKeyError(ValueError):
    """The configured key or key set cannot be used; the message names the setting."""


@dataclass(frozen=True)
class MemberTokens:
    """The platform's public keys and what a token must satisfy."""

    keys: dict[str | None, Any]  # by `kid`; None: the one key, which any token may use
    algorithms: tuple[str, ...]
    issuer: str | None
    audience: str | None
    leeway_seconds: float
    max_lifetime_seconds: float

    @classmethod
    def load(
        cls,
        public_key: Path | None,
        jwks: Path | None,
        algorithms: tuple[str, ...],
        issuer: str | None,
        audience: str | None,
        leeway_seconds: float,
        max_lifetime_seconds: float,
    ) -> MemberTokens | None:
        """The verifier for the configured key (None when none is configured: then no `app`
        call can be made)."""
        if public_key is not None and jwks is not None:
            raise MemberTokenKeyError("set member_token_public_key or member_token_jwks, not both")
        if public_key is not None:
            keys = {None: _pem_key(public_key)}
        elif jwks is not None:
            keys = _jwks_keys(jwks)
        else:
            return None
        return cls(keys, algorithms, issuer, audience, leeway_seconds, max_lifetime_seconds)

    def member_of(self, token: str | None, now: float | None = None) -> str:
        """The member the token names; a 401 ApiError when it is missing, expired or not one
        the platform signed for this service."""
        if not token:
            raise ApiError(
                401, "member_token_required", f"an app call needs the member's token: {HEADER}"
            )
        try:
            key = self._key_for(jwt.get_unverified_header(token).get("kid"))
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.algorithms),
                issuer=self.issuer,
                audience=self.audience,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self.audience is not None,
                    # The times are checked below, against an injectable clock.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except (jwt.PyJWTError, TypeError, ValueError) as exc:
            raise _invalid(f"not a member token of the membership platform ({exc})") from exc
        self._check_times(claims, time.time() if now is None else now)
        member = claims["sub"]
        if not isinstance(member, str) or not 1 <= len(member) <= MAX_MEMBER_ID:
            raise _invalid(f"the token's sub must be a member id, 1 to {MAX_MEMBER_ID} long")
        return member

    def _key_for(self, kid: object) -> Any:
        if None in self.keys or (kid is None and len(self.keys) == 1):
            return next(iter(self.keys.values()))
        if not isinstance(kid, str) or kid not in self.keys:
            raise _invalid(f"the token's key id {kid!r} is not in the platform's key set")
        return self.keys[kid]

    def _check_times(self, claims: dict[str, Any], now: float) -> None:
        expires, issued, not_before = (_time(claims, name) for name in ("exp", "iat", "nbf"))
        if expires is None:
            raise _invalid("the token's exp must be a time")
        if now > expires + self.leeway_seconds:
            raise ApiError(401, "member_token_expired", "the member token has expired")
        if not_before is not None and now + self.leeway_seconds < not_before:
            raise _invalid("the member token is not valid yet")
        if issued is not None and issued > now + self.leeway_seconds:
            raise _invalid("the member token was issued in the future")
        # Short-lived only: a leaked token must not work for long.
        lifetime = expires - (issued if issued is not None else now)
        if lifetime > self.max_lifetime_seconds or expires - now > (
            self.max_lifetime_seconds + self.leeway_seconds
        ):
            raise _invalid(
                f"the member token lives longer than {self.max_lifetime_seconds:g} seconds"
            )


def _time(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        if name in claims:
            raise _invalid(f"the token's {name} must be a time")
        return None
    return float(value)


def _invalid(message: str) -> ApiError:
    return ApiError(401, "member_token_invalid", message)


def _pem_key(path: Path) -> Any:
    try:
        return load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise MemberTokenKeyError(
            f"member_token_public_key {path} is not a readable PEM public key ({exc})"
        ) from exc


def _jwks_keys(path: Path) -> dict[str | None, Any]:
    try:
        keys = jwt.PyJWKSet.from_dict(json.loads(path.read_text())).keys
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise MemberTokenKeyError(
            f"member_token_jwks {path} is not a readable JWKS with a usable key ({exc})"
        ) from exc
    if len(keys) == 1 and keys[0].key_id is None:
        return {None: keys[0].key}
    missing = [k for k in keys if k.key_id is None]
    if missing:
        raise MemberTokenKeyError(f"member_token_jwks {path}: with several keys each needs a kid")
    return {k.key_id: k.key for k in keys}
