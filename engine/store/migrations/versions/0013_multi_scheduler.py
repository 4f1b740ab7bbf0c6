"""Several schedulers: the scheduler job that queued each attempt, for adoption.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_instance") as batch:
        batch.add_column(sa.Column("queued_by_job_id", sa.Integer(), nullable=True))
    op.create_index(
        "ix_task_instance_state_queued_by",
        "task_instance",
        ["state", "queued_by_job_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_task_instance_state_queued_by", table_name="task_instance")
    with op.batch_alter_table("task_instance") as batch:
        batch.drop_column("queued_by_job_id")
