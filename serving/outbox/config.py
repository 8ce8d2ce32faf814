"""Where events go and how hard delivery tries: a webhooks file (`webhooks:` and `delivery:`,
see `configs/webhooks.example.yaml`). `serving.settings` reads it, replaces its webhooks with
`TOUCHSTONE_WEBHOOKS` when that is set, and fills in secrets kept in environment variables."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from serving.outbox.signing import sign
from touchstone.config_files import read_yaml, validate


class Webhook(BaseModel):
    """Where events go and the secret that signs them (`secret`, or `secret_env`: the name of
    an environment variable holding it, so the secret need not live in a file)."""

    model_config = ConfigDict(extra="forbid")

    url: str
    secret: SecretStr | None = None
    secret_env: str | None = None

    @model_validator(mode="after")
    def _signable(self) -> Webhook:
        if self.secret is None and not self.secret_env:
            raise ValueError(f"webhook {safe_url(self.url)} has no secret")
        if self.secret is not None and not self.secret.get_secret_value():
            raise ValueError(f"webhook {safe_url(self.url)} has no secret")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"webhook URL must be http(s): {safe_url(self.url)}")
        return self

    def sign(self, timestamp: str, body: bytes) -> str:
        assert self.secret is not None, "the settings read secret_env into secret"
        return sign(self.secret.get_secret_value(), timestamp, body)


class OutboxConfig(BaseModel):
    """The webhooks and the delivery settings."""

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


def load_outbox_config(path: Path | None) -> OutboxConfig:
    """The webhooks and delivery settings of a webhooks file; None: no webhooks."""
    if path is None:
        return OutboxConfig()
    document = read_yaml(path)
    raw = {"webhooks": document.get("webhooks") or [], **(document.get("delivery") or {})}
    return validate(OutboxConfig, raw, str(path))


def safe_url(url: str) -> str:
    """A URL fit for logs: no user info, query or fragment (they may carry tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
