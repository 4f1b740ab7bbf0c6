"""The capacity rollup: per-minute figures of each pool and of the executor.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: UtcDateTime's storage type; migrations do not import models, which keep changing.
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "capacity_bucket",
        sa.Column("limit_name", sa.String(length=250), nullable=False),
        sa.Column("minute", UTC_DATETIME, nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("seconds_full", sa.Integer(), nullable=False),
        sa.Column("slot_seconds", sa.Float(), nullable=False),
        sa.Column("peak_used", sa.Float(), nullable=False),
        sa.Column("peak_demand", sa.Float(), nullable=False),
        sa.Column("waited", sa.Float(), nullable=False),
        sa.Column("waited_full", sa.Float(), nullable=False),
        sa.Column("waited_executor_only", sa.Float(), nullable=False),
        sa.Column("started", sa.Integer(), nullable=False),
        sa.Column("held_at_start", sa.Integer(), nullable=False),
        sa.Column("waits", sa.Text(), nullable=False),
        sa.Column("longest", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("limit_name", "minute"),
    )
    op.create_index("ix_capacity_bucket_minute", "capacity_bucket", ["minute"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_capacity_bucket_minute", table_name="capacity_bucket")
    op.drop_table("capacity_bucket")
