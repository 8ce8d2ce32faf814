"""The service's tables (SQLAlchemy 2) and how to reach the database.

SQLite in the data directory is the embedded default; PostgreSQL through
`TOUCHSTONE_DATABASE_URL`. The schema is owned by Alembic (`serving/migrations`): the service
upgrades to head when it starts, and tests run the same migrations on both databases.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, ClassVar, overload

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    false,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from serving.sqlite import sqlite_engine, sqlite_sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@overload
def as_utc(value: dt.datetime) -> dt.datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A timestamp read back from the database, made aware: SQLite returns naive ones, and
    every timestamp here was written in UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def iso_utc(value: dt.datetime | None) -> str | None:
    """A timestamp as the API, events, certificates and exports write it: ISO 8601 in UTC with
    a `Z` (certificates hash this form, so it must never change)."""
    if value is None:
        return None
    return as_utc(value).astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The public part of the key, to find its row; the secret is stored only as a hash.
    prefix: Mapped[str] = mapped_column(String(16), unique=True, index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)  # None: never


class Appraisal(Base):
    __tablename__ = "appraisals"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_appraisals_idempotency_key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), index=True)
    member_tier: Mapped[str] = mapped_column(String(32))  # the tier at submission decides
    category: Mapped[str] = mapped_column(String(32))
    brand: Mapped[str | None] = mapped_column(String(64))
    declared_value_cny: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(20), index=True)
    outcome: Mapped[str | None] = mapped_column(String(20))
    path: Mapped[str | None] = mapped_column(String(10))
    p_authentic: Mapped[float | None] = mapped_column(Float)
    rule: Mapped[str] = mapped_column(String(40))
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    reviews_required: Mapped[int] = mapped_column(Integer, default=0)
    photo_rounds: Mapped[int] = mapped_column(Integer, default=1)
    model_name: Mapped[str | None] = mapped_column(String(100))
    model_version: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sla_due_at: Mapped[dt.datetime] = mapped_column()
    # Set while the appraisal waits for the member's photos: the SLA clock is stopped then,
    # and `sla_due_at` moves on by the time waited (serving/appraisals/status.py).
    sla_paused_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finalized_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Gold items: made by admins with a known truth, to measure reviewers; never a member's.
    is_gold: Mapped[bool] = mapped_column(default=False, server_default=false())
    gold_outcome: Mapped[str | None] = mapped_column(String(20), default=None)
    # What the model alone would have decided at its thresholds (authentic, counterfeit or
    # human), whatever the policy then did: the audit sample measures it against reviewers.
    model_outcome: Mapped[str | None] = mapped_column(String(20), default=None)

    photos: Mapped[list[Photo]] = relationship(
        back_populates="appraisal", order_by="Photo.id", cascade="all, delete-orphan"
    )
    events: Mapped[list[AppraisalEvent]] = relationship(
        back_populates="appraisal", order_by="AppraisalEvent.id", cascade="all, delete-orphan"
    )


class Photo(Base):
    __tablename__ = "photos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    appraisal_id: Mapped[str] = mapped_column(ForeignKey("appraisals.id"), index=True)
    round: Mapped[int] = mapped_column(Integer, default=1)
    region: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the stored, clean bytes
    upload_sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    usable: Mapped[bool] = mapped_column(default=True)
    problems: Mapped[list[str]] = mapped_column(JSON, default=list)
    log_odds: Mapped[float | None] = mapped_column(Float)
    p_authentic: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    appraisal: Mapped[Appraisal] = relationship(back_populates="photos")


class AppraisalEvent(Base):
    """What happened to an appraisal and which rule decided it: append-only."""

    __tablename__ = "appraisal_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    appraisal_id: Mapped[str] = mapped_column(ForeignKey("appraisals.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    rule: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    appraisal: Mapped[Appraisal] = relationship(back_populates="events")


class ReviewTask(Base):
    """One person's review of one appraisal. Claimed under a lease: a reviewer who goes away
    loses the task when the lease runs out, and the next claim picks it up."""

    __tablename__ = "review_tasks"
    __table_args__ = (Index("ix_review_tasks_status_due_at", "status", "due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    appraisal_id: Mapped[str] = mapped_column(ForeignKey("appraisals.id"), index=True)
    stage: Mapped[str] = mapped_column(String(16))  # review, double, escalation
    required_role: Mapped[str] = mapped_column(String(16))  # reviewer (or senior), senior
    blind: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(
        String(16), default="open"
    )  # open, claimed, done, cancelled
    due_at: Mapped[dt.datetime] = mapped_column()
    claimed_by: Mapped[int | None] = mapped_column(Integer, default=None)  # api key id
    claimed_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    done_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    sla_breached_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Verdict(Base):
    __tablename__ = "verdicts"
    __table_args__ = (UniqueConstraint("task_id", name="uq_verdicts_task_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("review_tasks.id"))
    appraisal_id: Mapped[str] = mapped_column(ForeignKey("appraisals.id"), index=True)
    reviewer: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))
    notes: Mapped[str] = mapped_column(Text, default="")
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Who saw a member's photos and who decided what: append-only, never updated."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor: Mapped[int] = mapped_column(Integer)  # api key id
    action: Mapped[str] = mapped_column(String(32))
    appraisal_id: Mapped[str | None] = mapped_column(String(36), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Member(Base):
    """A member as the membership platform last told us: the tier decides SLA, routing and
    entitlements. Only an id and a tier: never names or phone numbers."""

    __tablename__ = "members"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tier: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MemberTier(Base):
    """The member's tier from `effective_from` on, as the membership platform set it: the one
    source of a member's tier, kept whole so that a month closes with the tier held then
    (serving/benefits/tiers.py). Written only by `BenefitsService.set_tier`; `members.tier`
    mirrors the latest row. A member with no row is an explorer."""

    __tablename__ = "member_tiers"
    __table_args__ = (
        Index("ix_member_tiers_member_id_effective_from", "member_id", "effective_from"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(32))
    effective_from: Mapped[dt.datetime] = mapped_column()


class LedgerEntry(Base):
    """One movement of a member's free appraisals, coupons or points: append-only; balances
    are sums; corrections are compensating entries. The idempotency key comes from the cause
    (e.g. appraisal id and rule), so a retry or a replay never grants or charges twice."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_ledger_entries_idempotency_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), index=True)
    asset: Mapped[str] = mapped_column(String(20))  # free_appraisal, coupon, points
    amount: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(40))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    appraisal_id: Mapped[str | None] = mapped_column(String(36), index=True, default=None)
    month: Mapped[str | None] = mapped_column(String(7), default=None)  # YYYY-MM (free quota)
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)  # points
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AppraisalPayment(Base):
    """How an appraisal was paid for at submission, and what became of the reservation."""

    __tablename__ = "appraisal_payments"

    appraisal_id: Mapped[str] = mapped_column(ForeignKey("appraisals.id"), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), index=True)
    method: Mapped[str] = mapped_column(String(20))  # free_quota, coupon, points, paid
    status: Mapped[str] = mapped_column(String(20))  # reserved, consumed, released
    price_cny: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class OutboxEvent(Base):
    """An event for the membership platform, written in the transaction of its cause and
    delivered afterwards by signed webhook, with retries; `id` lets receivers drop duplicates."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        Index("ix_outbox_events_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    member_id: Mapped[str | None] = mapped_column(String(64), default=None)
    appraisal_id: Mapped[str | None] = mapped_column(String(36), default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending, delivered, dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Certificate(Base):
    """A finalized appraisal's certificate, a link in a hash chain: `hash` covers the body and
    `prev_hash` (the previous certificate's hash), so an edit anywhere breaks the chain. An
    appraisal finalized again gets a new certificate that supersedes the old (migration 0005
    dropped the one-per-appraisal constraint); see serving/certificates.py."""

    __tablename__ = "certificates"
    __table_args__ = (UniqueConstraint("code", name="uq_certificates_code"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    code: Mapped[str] = mapped_column(String(32))
    appraisal_id: Mapped[str] = mapped_column(String(36), index=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ErasedMember(Base):
    """A member whose photos and derived data were erased: never in a training export again."""

    __tablename__ = "erased_members"

    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TrainingExport(Base):
    """One `touchstone data export-reviews` run: where it wrote photos in the clear, so that an
    erasure can name the exports that held the member (serving/feedback.py)."""

    __tablename__ = "training_exports"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    destination: Mapped[str] = mapped_column(Text)  # the manifest's absolute path
    rows: Mapped[int] = mapped_column(Integer, default=0)  # photos written


class TrainingExportMember(Base):
    """A member whose photos an export holds: a row each, so erasure finds exports by member."""

    __tablename__ = "training_export_members"

    export_id: Mapped[str] = mapped_column(ForeignKey("training_exports.id"), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'touchstone.db'}"


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        return sqlite_engine(url)  # transactions that take the write lock: serving/sqlite.py
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_sessionmaker(engine: Engine) -> sessionmaker:
    if engine.dialect.name == "sqlite":
        return sqlite_sessionmaker(engine)
    return sessionmaker(engine, expire_on_commit=False)


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (safe to run on every start)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        # "heads": parts of the schema may grow on separate branches off one revision.
        command.upgrade(config, "heads")
