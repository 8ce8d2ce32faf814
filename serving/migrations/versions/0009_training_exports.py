"""Training exports: each `touchstone data export-reviews` run, where it wrote, and which members'
photos it holds (a row per member, so an erasure finds the exports that held the member).

Revision ID: 0009_training_exports
Revises: 0005_certificates
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_training_exports"
down_revision = "0005_certificates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_exports",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
    )
    op.create_table(
        "training_export_members",
        sa.Column(
            "export_id", sa.String(36), sa.ForeignKey("training_exports.id"), primary_key=True
        ),
        sa.Column("member_id", sa.String(64), primary_key=True),
    )
    op.create_index(
        "ix_training_export_members_member_id", "training_export_members", ["member_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_training_export_members_member_id", "training_export_members")
    op.drop_table("training_export_members")
    op.drop_table("training_exports")
