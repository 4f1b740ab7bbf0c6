"""Alert incidents: alerts of one route and group (one DAG run by default) paged as one,
the incident each alert was grouped into, and an index to tell when a DAG last succeeded.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: UtcDateTime's storage type; migrations do not import models, which keep changing.
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert_incident",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("route", sa.String(length=250), nullable=False),
        sa.Column("group_key", sa.String(length=1000), nullable=False),
        sa.Column("open_key", sa.String(length=1000), nullable=True),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("group", sa.JSON(), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=True),
        sa.Column("run_id", sa.String(length=250), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("opened_at", UTC_DATETIME, nullable=False),
        sa.Column("last_alert_at", UTC_DATETIME, nullable=False),
        sa.Column("resolved_at", UTC_DATETIME, nullable=True),
        sa.Column("alerts", sa.Integer(), nullable=False),
        sa.Column("paged_alerts", sa.Integer(), nullable=False),
        sa.Column("next_page_at", UTC_DATETIME, nullable=True),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("last_page_at", UTC_DATETIME, nullable=True),
        sa.Column("last_page_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_incident")),
        sa.UniqueConstraint("key", name=op.f("uq_alert_incident_key")),
        sa.UniqueConstraint("open_key", name=op.f("uq_alert_incident_open_key")),
    )
    op.create_index(
        "ix_alert_incident_next_page_at", "alert_incident", ["next_page_at"], unique=False
    )
    op.create_index("ix_alert_incident_status_id", "alert_incident", ["status", "id"], unique=False)
    with op.batch_alter_table("alert") as batch:
        batch.add_column(sa.Column("incident_id", sa.Integer(), nullable=True))
    op.create_index("ix_alert_incident_id", "alert", ["incident_id"], unique=False)
    op.create_index(
        "ix_dag_run_dag_id_state_end_date",
        "dag_run",
        ["dag_id", "state", "end_date"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_dag_run_dag_id_state_end_date", table_name="dag_run")
    op.drop_index("ix_alert_incident_id", table_name="alert")
    with op.batch_alter_table("alert") as batch:
        batch.drop_column("incident_id")
    op.drop_index("ix_alert_incident_status_id", table_name="alert_incident")
    op.drop_index("ix_alert_incident_next_page_at", table_name="alert_incident")
    op.drop_table("alert_incident")
