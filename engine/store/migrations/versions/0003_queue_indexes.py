"""Indexes for the scheduler's queue order and its "run still unfinished" check.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_task_instance_queue_order",
        "task_instance",
        ["state", sa.text("priority_weight DESC"), "scheduled_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_task_instance_run_state", "task_instance", ["dag_id", "run_id", "state"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_task_instance_run_state", table_name="task_instance")
    op.drop_index("ix_task_instance_queue_order", table_name="task_instance")
