"""Gold items with known truth, and what the model alone would have decided.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("appraisals") as batch:
        batch.add_column(
            sa.Column("is_gold", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("gold_outcome", sa.String(20)))
        batch.add_column(sa.Column("model_outcome", sa.String(20)))


def downgrade() -> None:
    with op.batch_alter_table("appraisals") as batch:
        batch.drop_column("model_outcome")
        batch.drop_column("gold_outcome")
        batch.drop_column("is_gold")
