"""Everything the service is configured with, validated once at start.

One `Settings`: the options of `touchstone serve` and of the serving commands, each also read
from `TOUCHSTONE_<NAME>`, and the YAML files they name (routing policy, benefits, webhooks),
loaded and checked here, so a bad value or a misspelt key stops the start with its name. This
is the only module that reads the environment: the app, the commands and the tests build a
`Settings` and pass it on (`serving/deps.py` hands it to the routes).

A file not named falls back to `configs/<name>.yaml` in the working directory (the repository,
or `/app` in the image) when that exists, else to the built-in defaults, which are the same
numbers as the shipped files.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from serving.benefits.config import BenefitsConfig, BenefitsError, load_benefits
from serving.db import default_database_url, make_engine, make_sessionmaker, upgrade
from serving.outbox.config import OutboxConfig, Webhook, load_outbox_config
from serving.photos import PhotoStoreError, parse_photo_key
from serving.policy.config import PolicyConfig, PolicyError, load_policy
from touchstone.config_files import describe

CONFIGS = Path("configs")


class SettingsError(ValueError):
    """Settings that cannot be used; the message names each bad one."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOUCHSTONE_", extra="forbid")

    model: str | None = None  # a model directory or models:/NAME@ALIAS; None: people only
    data_dir: Path = Path("data")  # photos, the web secret and the SQLite database
    database_url: str | None = None  # default: SQLite in data_dir
    policy: Path | None = None  # the routing policy's YAML
    benefits: Path | None = None  # the benefits' YAML
    webhooks_file: Path | None = None  # webhooks and delivery settings (YAML)
    webhooks: list[Webhook] | None = None  # a JSON list of {url, secret}: replaces the file's
    # AES-256-GCM key for photos at rest (base64 of 32 bytes); None: photos are not encrypted.
    photo_key: SecretStr | None = None
    # Signs the reviewers' session cookies; None: DATA_DIR/web-secret, made on first use.
    web_secret: SecretStr | None = Field(None, min_length=32)
    # Upload limits: the body is counted while it streams in, so an oversized upload is
    # refused before it is buffered; one photo may not exceed max_photo_bytes.
    max_request_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_photo_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_pixels: int = Field(50_000_000, gt=0)
    # Micro-batching (serving/batching.py).
    max_batch: int = Field(16, ge=1)
    max_wait_ms: float = Field(5.0, ge=0)
    max_queue: int = Field(256, ge=1)
    batching: bool = True
    threads: int | None = Field(None, ge=1)  # ONNX Runtime threads; default: all cores
    # The review queue: how long a claim lasts without a heartbeat, whether double reviews hide
    # the model's scores, and how often tasks past their SLA are flagged.
    review_lease_seconds: float = Field(600.0, gt=0)
    blind_scores: bool = True
    sla_sweep_seconds: float = Field(30.0, gt=0)

    _policy: PolicyConfig = PrivateAttr(default_factory=PolicyConfig)
    _benefits: BenefitsConfig = PrivateAttr(default_factory=BenefitsConfig)
    _outbox: OutboxConfig = PrivateAttr(default_factory=OutboxConfig)

    @field_validator("photo_key")
    @classmethod
    def _usable_photo_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_photo_key(value.get_secret_value())  # refuses a broken key, naming it
        return value

    @model_validator(mode="after")
    def _load_files(self) -> Settings:
        try:
            self._policy = load_policy(self.policy or _shipped("policy.yaml"))
            self._benefits = load_benefits(self.benefits or _shipped("benefits.yaml"))
        except (PolicyError, BenefitsError) as exc:
            raise ValueError(str(exc)) from exc
        outbox = load_outbox_config(self.webhooks_file or _shipped("webhooks.yaml"))
        if self.webhooks is not None:
            outbox = outbox.model_copy(update={"webhooks": self.webhooks})
        self._outbox = outbox.model_copy(
            update={"webhooks": [_with_secret(hook) for hook in outbox.webhooks]}
        )
        return self

    @property
    def policy_config(self) -> PolicyConfig:
        return self._policy

    @property
    def benefits_config(self) -> BenefitsConfig:
        return self._benefits

    @property
    def outbox_config(self) -> OutboxConfig:
        return self._outbox

    def resolved_database_url(self) -> str:
        return self.database_url or default_database_url(self.data_dir)

    def photo_key_bytes(self) -> bytes | None:
        return (
            None if self.photo_key is None else parse_photo_key(self.photo_key.get_secret_value())
        )


def load_settings(**options: object) -> Settings:
    """Settings from command-line `options` (None: not given, so the environment or the
    default decides); SettingsError says what is wrong."""
    given = {name: value for name, value in options.items() if value is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(describe(error, Settings) for error in exc.errors())
        raise SettingsError(f"invalid settings: {problems}") from exc
    except PhotoStoreError as exc:
        raise SettingsError(exc.message) from exc


def _shipped(name: str) -> Path | None:
    path = CONFIGS / name
    return path if path.exists() else None


def _with_secret(hook: Webhook) -> Webhook:
    """A webhook whose secret lives in another environment variable (`secret_env`), read."""
    if hook.secret is not None or not hook.secret_env:
        return hook
    value = os.environ.get(hook.secret_env)
    if not value:
        raise ValueError(f"webhook secret variable {hook.secret_env} is not set")
    return hook.model_copy(update={"secret": SecretStr(value)})


def open_existing_database(settings: Settings, table: str) -> Engine:
    """The service's database for a command that only reads it: never created or migrated from
    here, and refused (SettingsError) when absent or without `table`."""
    if settings.database_url is None and not (settings.data_dir / "touchstone.db").exists():
        raise SettingsError(
            f"no database in {settings.data_dir} (touchstone.db); is --data-dir the service's?"
        )
    engine = make_engine(settings.resolved_database_url())
    if not inspect(engine).has_table(table):
        engine.dispose()
        raise SettingsError(f"the database has no {table} table: not a Touchstone database")
    return engine


def open_database(settings: Settings) -> tuple[Engine, sessionmaker]:
    """The service's database for a command-line tool, created if needed and upgraded to the
    newest schema, as `touchstone serve` does."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    return engine, make_sessionmaker(engine)
