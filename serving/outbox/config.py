"""Where events go and how hard delivery tries: `configs/webhooks.yaml` (`webhooks:` and
`delivery:`), or the webhooks alone from `TOUCHSTONE_WEBHOOKS`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from serving.outbox.signing import sign

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "webhooks.yaml"


class Webhook(BaseModel):
    """Where events go and the secret that signs them (`secret`, or `secret_env`: the name of
    an environment variable holding it, so the secret need not live in a file)."""

    model_config = ConfigDict(extra="forbid")

    url: str
    secret: SecretStr | None = None
    secret_env: str | None = None

    @model_validator(mode="after")
    def _resolve_secret(self) -> Webhook:
        if self.secret is None and self.secret_env:
            value = os.environ.get(self.secret_env)
            if not value:
                raise ValueError(f"webhook secret variable {self.secret_env} is not set")
            self.secret = SecretStr(value)
        if self.secret is None or not self.secret.get_secret_value():
            raise ValueError(f"webhook {safe_url(self.url)} has no secret")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"webhook URL must be http(s): {safe_url(self.url)}")
        return self

    def sign(self, timestamp: str, body: bytes) -> str:
        assert self.secret is not None
        return sign(self.secret.get_secret_value(), timestamp, body)


class OutboxConfig(BaseModel):
    """`configs/webhooks.yaml` (`webhooks:` and `delivery:`), or `TOUCHSTONE_WEBHOOKS`."""

    model_config = ConfigDict(extra="forbid")

    webhooks: list[Webhook] = Field(default_factory=list)
    max_attempts: int = Field(8, ge=1)
    backoff_base_seconds: float = Field(2.0, gt=0)  # the wait after try n: base * 2^(n-1)
    backoff_max_seconds: float = Field(3600.0, gt=0)
    jitter: float = Field(0.25, ge=0, le=1)  # waits are cut by up to this share, at random
    timeout_seconds: float = Field(5.0, gt=0)
    batch: int = Field(100, ge=1)
    interval_seconds: float = Field(2.0, gt=0)
    # How long a claim lasts before another deliverer may send the event again (a deliverer
    # killed mid-POST); None: long enough for a whole batch to every webhook.
    lease_seconds: float | None = Field(None, gt=0)


def load_config(path: Path | None = None) -> OutboxConfig:
    """The delivery settings from `path` (default `configs/webhooks.yaml`, if present); the
    webhooks from `TOUCHSTONE_WEBHOOKS` (a JSON list of {url, secret}) when it is set."""
    raw: dict[str, Any] = {}
    source = path or DEFAULT_CONFIG
    if path is not None or source.exists():
        document = yaml.safe_load(source.read_text()) or {}
        raw = {"webhooks": document.get("webhooks") or [], **(document.get("delivery") or {})}
    env = os.environ.get("TOUCHSTONE_WEBHOOKS")
    if env:
        raw["webhooks"] = json.loads(env)
    return OutboxConfig.model_validate(raw)


def safe_url(url: str) -> str:
    """A URL fit for logs: no user info, query or fragment (they may carry tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
