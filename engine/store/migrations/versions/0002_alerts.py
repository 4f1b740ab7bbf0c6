"""Alert delivery: per-attempt records, grouping and the indexes the dispatcher queries by.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert_delivery",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("latency", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_delivery")),
    )
    op.create_index("ix_alert_delivery_alert_id", "alert_delivery", ["alert_id"], unique=False)
    with op.batch_alter_table("alert") as batch:
        batch.add_column(sa.Column("group_key", sa.String(length=1000), nullable=True))
        batch.add_column(sa.Column("count", sa.Integer(), nullable=False, server_default="1"))
    op.create_index("ix_alert_group_key_status", "alert", ["group_key", "status"], unique=False)
    op.create_index("ix_alert_route_sent_at", "alert", ["route", "sent_at"], unique=False)
    op.create_index("ix_alert_created_at", "alert", ["created_at"], unique=False)
    op.create_index("ix_alert_dag_id_task_id", "alert", ["dag_id", "task_id"], unique=False)
    with op.batch_alter_table("sla_miss") as batch:
        batch.add_column(sa.Column("state", sa.String(length=20), nullable=True))
    op.create_index("ix_sla_miss_detected_at", "sla_miss", ["detected_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_sla_miss_detected_at", table_name="sla_miss")
    with op.batch_alter_table("sla_miss") as batch:
        batch.drop_column("state")
    op.drop_index("ix_alert_dag_id_task_id", table_name="alert")
    op.drop_index("ix_alert_created_at", table_name="alert")
    op.drop_index("ix_alert_route_sent_at", table_name="alert")
    op.drop_index("ix_alert_group_key_status", table_name="alert")
    with op.batch_alter_table("alert") as batch:
        batch.drop_column("count")
        batch.drop_column("group_key")
    op.drop_index("ix_alert_delivery_alert_id", table_name="alert_delivery")
    op.drop_table("alert_delivery")
