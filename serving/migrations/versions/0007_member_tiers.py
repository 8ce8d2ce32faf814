"""Member tiers with their history: a row per tier the membership platform set, from when, so a
month closes with the tier held then. Backfilled with each member's current tier from the day
the member's row was created: the history before this migration is unknown, and this keeps what
the service did before (the current tier decided).

Revision ID: 0007_member_tiers
Revises: 0005_certificates
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_member_tiers"
down_revision = "0005_certificates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "member_tiers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_member_tiers_member_id_effective_from",
        "member_tiers",
        ["member_id", "effective_from"],
    )
    op.execute(
        "INSERT INTO member_tiers (member_id, tier, effective_from) "
        "SELECT id, tier, created_at FROM members ORDER BY id"
    )


def downgrade() -> None:
    op.drop_index("ix_member_tiers_member_id_effective_from", "member_tiers")
    op.drop_table("member_tiers")
