"""An index on alert_delivery.at: the console's Alerts page reads the delivery attempts
of a window (success rate and latency per channel) without scanning the whole history.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_alert_delivery_at", "alert_delivery", ["at"])


def downgrade() -> None:
    op.drop_index("ix_alert_delivery_at", table_name="alert_delivery")
