"""API keys may expire: `expires_at` (None: never), checked on every request.

Revision ID: 0008_api_key_expiry
Revises: 0005_certificates
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_api_key_expiry"
down_revision = "0005_certificates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
