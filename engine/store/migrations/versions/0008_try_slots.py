"""Each task try keeps the pool it held, its pool_slots, and when it was scheduled and
queued, so slot occupancy and queue delay over any window are computed from tries alone
(the console's capacity page); an index on end_date reads only the tries of a window.

Existing tries get their task instance's pool and pool_slots, and the latest try of
each task instance its scheduled and queued times.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: UtcDateTime's storage type; migrations do not import models, which keep changing.
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("task_try") as batch:
        batch.add_column(sa.Column("pool", sa.String(length=250), nullable=True))
        batch.add_column(sa.Column("pool_slots", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("scheduled_at", UTC_DATETIME, nullable=True))
        batch.add_column(sa.Column("queued_at", UTC_DATETIME, nullable=True))
        batch.create_index("ix_task_try_end_date", ["end_date"])
    op.execute(
        """
        UPDATE task_try SET
            pool = (SELECT ti.pool FROM task_instance ti WHERE ti.id = task_try.ti_id),
            pool_slots = (SELECT ti.pool_slots FROM task_instance ti WHERE ti.id = task_try.ti_id)
        """
    )
    op.execute(
        """
        UPDATE task_try SET
            scheduled_at = (SELECT ti.scheduled_at FROM task_instance ti
                            WHERE ti.id = task_try.ti_id AND ti.try_number = task_try.try_number),
            queued_at = (SELECT ti.queued_at FROM task_instance ti
                         WHERE ti.id = task_try.ti_id AND ti.try_number = task_try.try_number)
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("task_try") as batch:
        batch.drop_index("ix_task_try_end_date")
        batch.drop_column("queued_at")
        batch.drop_column("scheduled_at")
        batch.drop_column("pool_slots")
        batch.drop_column("pool")
