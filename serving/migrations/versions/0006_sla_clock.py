"""The SLA clock stops while an appraisal waits for the member's photos: when it stopped.

Appraisals already waiting stopped their clock when they last changed (`updated_at`), the
closest the old rows can tell.

Revision ID: 0006_sla_clock
Revises: 0005_certificates
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_sla_clock"
down_revision = "0005_certificates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("appraisals") as batch:
        batch.add_column(sa.Column("sla_paused_at", sa.DateTime(timezone=True)))
    op.execute("UPDATE appraisals SET sla_paused_at = updated_at WHERE status = 'awaiting_photos'")


def downgrade() -> None:
    with op.batch_alter_table("appraisals") as batch:
        batch.drop_column("sla_paused_at")
