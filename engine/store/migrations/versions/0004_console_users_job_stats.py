"""Console users (role and password hash) and the scheduler's loop duration and executor
slots on its job row, so the console can show them.

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

#: UtcDateTime's storage type; migrations do not import models, which keep changing.
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "console_user",
        sa.Column("username", sa.String(length=250), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("password_hash", sa.String(length=500), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("last_login", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_console_user")),
    )
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("last_loop_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("slots_used", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("slots_open", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("slots_open")
        batch.drop_column("slots_used")
        batch.drop_column("last_loop_seconds")
    op.drop_table("console_user")
