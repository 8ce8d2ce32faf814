"""Join the four branches of the trust work (the SLA clock, member tiers, key expiry, training
exports), each made off 0005 in parallel, into one head again: no schema change of its own.

Revision ID: 0010_trust
Revises: 0006_sla_clock, 0007_member_tiers, 0008_api_key_expiry, 0009_training_exports
Create Date: 2026-11-26
"""

revision = "0010_trust"
down_revision = (
    "0006_sla_clock",
    "0007_member_tiers",
    "0008_api_key_expiry",
    "0009_training_exports",
)
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
