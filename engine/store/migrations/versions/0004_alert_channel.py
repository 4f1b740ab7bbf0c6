"""Alert delivery per channel: the channel a row is delivered to, and when it was queued.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("alert") as batch:
        batch.add_column(sa.Column("channel", sa.String(length=250), nullable=True))
        batch.add_column(sa.Column("queued_at", UTC_DATETIME, nullable=True))
    # Rows written before: their route is their channel, and they were queued when created.
    op.execute("UPDATE alert SET channel = route, queued_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("alert") as batch:
        batch.drop_column("queued_at")
        batch.drop_column("channel")
