"""Failures grouped by signature and import errors with their first sighting: the error
signature of each try (`task_try.error_signature`, in an index with `end_date`, `state`,
`dag_id` and `task_id`, so a window of failures is grouped from the index alone) and
`import_error.first_seen`.

Tries that ended in the last 7 days (the console's widest window) get their signature
computed here; older ones keep none.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: UtcDateTime's storage type; migrations do not import models, which keep changing.
UTC_DATETIME = sa.DateTime(timezone=True)
#: tries whose signature is computed as the column is added
BACKFILL = timedelta(days=7)
BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table("task_try") as batch:
        batch.add_column(sa.Column("error_signature", sa.String(length=16), nullable=True))
        batch.create_index(
            "ix_task_try_end_date_state_error_signature_dag_id_task_id",
            ["end_date", "state", "error_signature", "dag_id", "task_id"],
            unique=False,
        )
    with op.batch_alter_table("import_error") as batch:
        batch.add_column(sa.Column("first_seen", UTC_DATETIME, nullable=True))
    op.execute('UPDATE import_error SET first_seen = "timestamp"')
    _backfill_signatures()


def _backfill_signatures() -> None:
    from engine.store.error_signature import signature

    bind = op.get_bind()
    tries = sa.table(
        "task_try",
        sa.column("id", sa.Integer),
        sa.column("end_date", UTC_DATETIME),
        sa.column("error", sa.Text),
        sa.column("error_signature", sa.String),
    )
    since = datetime.now(UTC) - BACKFILL
    if bind.dialect.name == "sqlite":  # stored as naive UTC text there
        since = since.replace(tzinfo=None)
    last = 0
    while True:
        rows = bind.execute(
            sa.select(tries.c.id, tries.c.error)
            .where(tries.c.id > last, tries.c.end_date >= since, tries.c.error.is_not(None))
            .order_by(tries.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        bind.execute(
            tries.update()
            .where(tries.c.id == sa.bindparam("key"))
            .values(error_signature=sa.bindparam("value")),
            [{"key": row.id, "value": signature(row.error)} for row in rows],
        )
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("import_error") as batch:
        batch.drop_column("first_seen")
    with op.batch_alter_table("task_try") as batch:
        batch.drop_index("ix_task_try_end_date_state_error_signature_dag_id_task_id")
        batch.drop_column("error_signature")
