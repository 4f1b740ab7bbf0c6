"""A DAG's display name (`DAG(dag_display_name=...)`), shown by `dags list` and the
console instead of its id.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dag") as batch:
        batch.add_column(sa.Column("dag_display_name", sa.String(length=2000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dag") as batch:
        batch.drop_column("dag_display_name")
