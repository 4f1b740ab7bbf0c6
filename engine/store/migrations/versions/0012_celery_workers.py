"""Celery workers: the id of the message that carries a queued attempt, and each
`dagwatch worker`'s heartbeat with its slots.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

#: UtcDateTime's storage type; migrations do not import models, which keep changing.
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("task_instance") as batch:
        batch.add_column(sa.Column("external_executor_id", sa.String(length=250), nullable=True))
    op.create_table(
        "worker",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("hostname", sa.String(length=250), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", sa.String(length=1000), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("running", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("start_date", UTC_DATETIME, nullable=False),
        sa.Column("latest_heartbeat", UTC_DATETIME, nullable=False),
        sa.Column("end_date", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker")),
        sa.UniqueConstraint("name", name=op.f("uq_worker_name")),
    )
    op.create_index("ix_worker_state_heartbeat", "worker", ["state", "latest_heartbeat"])


def downgrade() -> None:
    op.drop_index("ix_worker_state_heartbeat", table_name="worker")
    op.drop_table("worker")
    with op.batch_alter_table("task_instance") as batch:
        batch.drop_column("external_executor_id")
