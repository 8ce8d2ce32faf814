"""Certificates: an appraisal finalized again (an overturn) gets a new certificate that
supersedes the old one, so one appraisal may have several; look them up by appraisal.

Revision ID: 0005_certificates
Revises: 0004
Create Date: 2026-11-22
"""

from alembic import op

revision = "0005_certificates"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot drop a constraint in place, so the table is copied.
    with op.batch_alter_table("certificates") as batch:
        batch.drop_constraint("uq_certificates_appraisal_id", type_="unique")
        batch.create_index("ix_certificates_appraisal_id", ["appraisal_id"])


def downgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.drop_index("ix_certificates_appraisal_id")
        batch.create_unique_constraint("uq_certificates_appraisal_id", ["appraisal_id"])
