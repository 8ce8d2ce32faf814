"""Members and their benefits ledger, the outbox of events, certificates, erasures.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "members",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("asset", sa.String(20), nullable=False),
        sa.Column("amount", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("appraisal_id", sa.String(36)),
        sa.Column("month", sa.String(7)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("idempotency_key", name="uq_ledger_entries_idempotency_key"),
    )
    op.create_index("ix_ledger_entries_member_id", "ledger_entries", ["member_id"])
    op.create_index("ix_ledger_entries_appraisal_id", "ledger_entries", ["appraisal_id"])
    op.create_table(
        "appraisal_payments",
        sa.Column("appraisal_id", sa.String(36), sa.ForeignKey("appraisals.id"), primary_key=True),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("method", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("price_cny", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_appraisal_payments_member_id", "appraisal_payments", ["member_id"])
    op.create_table(
        "outbox_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("member_id", sa.String(64)),
        sa.Column("appraisal_id", sa.String(36)),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "ix_outbox_events_status_next_attempt_at", "outbox_events", ["status", "next_attempt_at"]
    )
    op.create_table(
        "certificates",
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("appraisal_id", sa.String(36), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("code", name="uq_certificates_code"),
        sa.UniqueConstraint("appraisal_id", name="uq_certificates_appraisal_id"),
    )
    op.create_table(
        "erased_members",
        sa.Column("member_id", sa.String(64), primary_key=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "erased_members",
        "certificates",
        "outbox_events",
        "appraisal_payments",
        "ledger_entries",
        "members",
    ):
        op.drop_table(table)
