"""Signing a delivery, and what a receiver does to check one.

A receiver verifies a delivery like this (`secret` is the webhook's secret):

    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, "sha256").hexdigest()
    ok = hmac.compare_digest(f"sha256={expected}", headers["Touchstone-Signature"])
    fresh = abs(time.time() - int(timestamp)) < 300   # refuse replays of old deliveries
"""

from __future__ import annotations

import hashlib
import hmac
import time


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    *,
    tolerance_seconds: float | None = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver does: check the signature (constant time) and that it is recent."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get("touchstone-timestamp", "")
    signature = lower.get("touchstone-signature", "")
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    # Compared as bytes: compare_digest raises on a str with non-ASCII characters, and a header
    # is whatever the sender put there.
    expected = sign(secret, timestamp, body).encode()
    if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape")):
        return False
    if tolerance_seconds is None:
        return True
    return abs((time.time() if now is None else now) - int(timestamp)) <= tolerance_seconds
