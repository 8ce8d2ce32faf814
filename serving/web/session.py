"""Cookie sessions for the reviewers' web app.

The cookie holds the API key's id and a CSRF token, signed with the web secret
(`TOUCHSTONE_WEB_SECRET`, else one kept in the data directory, `DATA_DIR/web-secret`, 0600):
never the key itself, so a stolen cookie cannot be turned into an API key, and it dies with
the secret. The key's row is read again on every
request, so a revoked or expired key, or a changed role, takes effect at once.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import sessionmaker

from serving.auth import Caller, refusal
from serving.db import ApiKey
from serving.errors import ApiError

COOKIE = "touchstone_review"
# A working day: a reviewer signs in once a shift, and a forgotten browser does not stay in.
MAX_AGE_SECONDS = 12 * 3600
WEB_ROLES = ("reviewer", "senior", "admin")
SECRET_FILE = "web-secret"


@dataclass(frozen=True)
class WebSession:
    key_id: int | None  # None: not signed in yet, but holding a CSRF token for the login form
    csrf: str


class SignInRequired(Exception):
    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


def load_secret(data_dir: Path) -> bytes:
    """The data directory's signing secret, made on first use. Several server processes may
    start at once: the file appears whole or not at all (written aside, then linked)."""
    path = Path(data_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".web-secret-")  # mode 0600
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another process was first: use theirs
                os.link(temp, path)
        finally:
            os.unlink(temp)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise RuntimeError(f"{path} holds no usable secret; remove it to make a new one")
    return secret.encode()


def make_signer(secret: bytes) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt="touchstone-review-session")


def read_session(request: Request, signer: URLSafeTimedSerializer) -> WebSession | None:
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    try:
        data = signer.loads(value, max_age=MAX_AGE_SECONDS)
    except BadSignature:  # also expired ones (SignatureExpired is a BadSignature)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("c"), str):
        return None
    key_id = data.get("k")
    return WebSession(key_id if isinstance(key_id, int) else None, data["c"])


def new_session(key_id: int | None) -> WebSession:
    """A fresh session with a fresh CSRF token; signing in always makes a new one, so a token
    planted before sign-in is worthless after it."""
    return WebSession(key_id, secrets.token_urlsafe(24))


def write_session(
    request: Request, response: Response, session: WebSession, signer: URLSafeTimedSerializer
) -> None:
    value = signer.dumps({"k": session.key_id, "c": session.csrf})
    response.set_cookie(
        COOKIE,
        value,
        max_age=MAX_AGE_SECONDS,
        path="/review",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/review", httponly=True, samesite="strict")


def caller_of(sessions: sessionmaker, key_id: int) -> Caller | None:
    """The key's current role, or None if it is revoked, expired, gone, or not a reviewing
    role."""
    with sessions() as db:
        key = db.get(ApiKey, key_id)
    if key is None or refusal(key) is not None or key.role not in WEB_ROLES:
        return None
    return Caller(key.id, key.role)


def signed_in(request: Request, signer: URLSafeTimedSerializer, sessions: sessionmaker) -> Caller:
    """The signed-in reviewer; SignInRequired when there is no valid session."""
    session = read_session(request, signer)
    if session is None or session.key_id is None:
        raise SignInRequired()
    caller = caller_of(sessions, session.key_id)
    if caller is None:
        raise SignInRequired("Your key was revoked, has expired, or no longer reviews.")
    return caller


def check_csrf(request: Request, token: str | None, signer: URLSafeTimedSerializer) -> None:
    session = read_session(request, signer)
    # Compared as bytes: compare_digest refuses str that is not ASCII, and a form may hold any.
    if (
        session is None
        or not token
        or not hmac.compare_digest(session.csrf.encode(), token.encode())
    ):
        raise ApiError(
            403, "csrf_failed", "The form had expired or did not come from this app; reload it."
        )


def csrf_token(request: Request, signer: URLSafeTimedSerializer) -> str:
    session = read_session(request, signer)
    return session.csrf if session else ""
