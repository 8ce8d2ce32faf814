"""Appraisals, their photos and events; API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("label", sa.String(100)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"], unique=True)
    op.create_table(
        "appraisals",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("member_tier", sa.String(32), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("brand", sa.String(64)),
        sa.Column("declared_value_cny", sa.Float),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(20)),
        sa.Column("path", sa.String(10)),
        sa.Column("p_authentic", sa.Float),
        sa.Column("rule", sa.String(40), nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("reviews_required", sa.Integer, nullable=False),
        sa.Column("photo_rounds", sa.Integer, nullable=False),
        sa.Column("model_name", sa.String(100)),
        sa.Column("model_version", sa.String(64)),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("request_sha256", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sla_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("idempotency_key", name="uq_appraisals_idempotency_key"),
    )
    op.create_index("ix_appraisals_member_id", "appraisals", ["member_id"])
    op.create_index("ix_appraisals_status", "appraisals", ["status"])
    op.create_index("ix_appraisals_created_at", "appraisals", ["created_at"])
    op.create_table(
        "photos",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("appraisal_id", sa.String(36), sa.ForeignKey("appraisals.id"), nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("upload_sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("usable", sa.Boolean, nullable=False),
        sa.Column("problems", sa.JSON, nullable=False),
        sa.Column("log_odds", sa.Float),
        sa.Column("p_authentic", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_photos_appraisal_id", "photos", ["appraisal_id"])
    op.create_index("ix_photos_sha256", "photos", ["sha256"])
    op.create_table(
        "appraisal_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("appraisal_id", sa.String(36), sa.ForeignKey("appraisals.id"), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("rule", sa.String(40)),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_appraisal_events_appraisal_id", "appraisal_events", ["appraisal_id"])


def downgrade() -> None:
    op.drop_table("appraisal_events")
    op.drop_table("photos")
    op.drop_table("appraisals")
    op.drop_table("api_keys")
