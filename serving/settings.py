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

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
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
from serving.certificate_head import load_signing_key
from serving.db import default_database_url, make_engine, make_sessionmaker, upgrade
from serving.member_tokens import ASYMMETRIC, MemberTokens
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
    # Signs the certificate chain's head (serving/certificate_head.py): an Ed25519 private key,
    # a PEM file kept away from the database; None: the head is served unsigned.
    certificate_key: Path | None = None
    # Upload limits: the body is counted while it streams in, so an oversized upload is
    # refused before it is buffered; one photo may not exceed max_photo_bytes.
    max_request_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_photo_bytes: int = Field(16 * 1024 * 1024, gt=0)
    max_pixels: int = Field(50_000_000, gt=0)
    # Photos decoded at once in the process (touchstone/imaging.py); None: as many as fit in
    # half the memory at max_pixels each, and no more than the cores.
    decode_slots: int | None = Field(None, ge=1)
    # The memory uploads' decoded photos may hold at once (serving/appraisals/memory.py): a
    # request reserves its photos' share before decoding and waits while it is taken; None: a
    # quarter of the memory (at least one photo at max_pixels).
    decode_memory_bytes: int | None = Field(None, ge=1)
    # Slow or stalled clients (`touchstone serve`, serving/slow_clients.py): a request's head
    # must arrive within request_head_timeout seconds of the connection opening (or of the
    # last response), else the connection is closed; its body within request_body_timeout
    # seconds of the app starting to read it, else 408 and closed. An idle keep-alive
    # connection closes after keep_alive_seconds; past limit_concurrency connections and
    # requests in flight, new requests get 503.
    request_head_timeout: float = Field(10.0, gt=0)
    request_body_timeout: float = Field(120.0, gt=0)
    keep_alive_seconds: int = Field(5, ge=1)
    limit_concurrency: int = Field(256, ge=1)
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
    # Member tokens (serving/member_tokens.py): the membership platform's public key as a PEM
    # file, or its key set as a JWKS file (read at start, never fetched); None: no `app` call
    # can be made. Tokens must be signed with one of the algorithms (asymmetric only), name
    # the issuer and audience when these are set, and live at most max_lifetime seconds.
    member_token_public_key: Path | None = None
    member_token_jwks: Path | None = None
    member_token_algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    member_token_issuer: str | None = None
    member_token_audience: str | None = None
    member_token_leeway_seconds: float = Field(30.0, ge=0, le=300)
    member_token_max_lifetime_seconds: float = Field(3600.0, gt=0)
    # Submissions per member in any rolling hour, whatever the key (429 `rate_limited` after).
    member_submissions_per_hour: int = Field(30, ge=1)

    _policy: PolicyConfig = PrivateAttr(default_factory=PolicyConfig)
    _benefits: BenefitsConfig = PrivateAttr(default_factory=BenefitsConfig)
    _outbox: OutboxConfig = PrivateAttr(default_factory=OutboxConfig)
    _member_tokens: MemberTokens | None = PrivateAttr(default=None)

    @field_validator("certificate_key")
    @classmethod
    def _usable_certificate_key(cls, value: Path | None) -> Path | None:
        if value is not None:
            load_signing_key(value)  # CertificateKeyError (a ValueError) names the file
        return value

    def certificate_signing_key(self) -> Ed25519PrivateKey | None:
        """The key that signs the chain's head; None when none is configured."""
        return None if self.certificate_key is None else load_signing_key(self.certificate_key)

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

    @field_validator("member_token_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # A symmetric algorithm would let anyone holding the public key make tokens.
        unknown = [name for name in value if name not in ASYMMETRIC]
        if unknown or not value:
            raise ValueError(f"use some of {', '.join(ASYMMETRIC)}, not {', '.join(unknown)}")
        return value

    @model_validator(mode="after")
    def _load_member_tokens(self) -> Settings:
        self._member_tokens = MemberTokens.load(
            self.member_token_public_key,
            self.member_token_jwks,
            self.member_token_algorithms,
            self.member_token_issuer,
            self.member_token_audience,
            self.member_token_leeway_seconds,
            self.member_token_max_lifetime_seconds,
        )  # MemberTokenKeyError (a ValueError) names the setting
        return self

    @property
    def member_tokens(self) -> MemberTokens | None:
        """The member-token verifier; None when no key is configured."""
        return self._member_tokens

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
