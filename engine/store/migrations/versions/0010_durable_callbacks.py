"""Nothing lost across a restart: callback requests kept until they ran, deliveries marked
when a crash may have repeated them.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "callback_request",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=True),
        sa.Column("map_index", sa.Integer(), nullable=False, server_default="-1"),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("fileloc", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("queued_by", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("done_at", UTC_DATETIME, nullable=True),
    )
    op.create_index("ix_callback_request_state", "callback_request", ["state", "created_at"])
    with op.batch_alter_table("alert") as batch:
        batch.add_column(
            sa.Column("possible_duplicate", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("claimed_by", sa.String(length=250), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert") as batch:
        batch.drop_column("claimed_by")
        batch.drop_column("possible_duplicate")
    op.drop_index("ix_callback_request_state", table_name="callback_request")
    op.drop_table("callback_request")
