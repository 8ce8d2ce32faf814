"""The human review queue: review tasks with leases, verdicts, and the audit log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("appraisals", sa.Column("finalized_at", sa.DateTime(timezone=True)))
    op.create_table(
        "review_tasks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("appraisal_id", sa.String(36), sa.ForeignKey("appraisals.id"), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("required_role", sa.String(16), nullable=False),
        sa.Column("blind", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.Integer),
        sa.Column("claimed_at", sa.DateTime(timezone=True)),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
        sa.Column("done_at", sa.DateTime(timezone=True)),
        sa.Column("sla_breached_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_review_tasks_appraisal_id", "review_tasks", ["appraisal_id"])
    op.create_index("ix_review_tasks_status_due_at", "review_tasks", ["status", "due_at"])
    op.create_table(
        "verdicts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("review_tasks.id"), nullable=False),
        sa.Column("appraisal_id", sa.String(36), sa.ForeignKey("appraisals.id"), nullable=False),
        sa.Column("reviewer", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("notes", sa.Text, nullable=False),
        sa.Column("findings", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("task_id", name="uq_verdicts_task_id"),
    )
    op.create_index("ix_verdicts_appraisal_id", "verdicts", ["appraisal_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("actor", sa.Integer, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("appraisal_id", sa.String(36)),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_audit_log_appraisal_id", "audit_log", ["appraisal_id"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("verdicts")
    op.drop_table("review_tasks")
    op.drop_column("appraisals", "finalized_at")
