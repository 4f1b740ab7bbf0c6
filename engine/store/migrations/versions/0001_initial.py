"""The initial metastore schema, as declared in engine/store/models.py, and default_pool.

Revision ID: 0001
Revises:

A frozen copy of the schema: later changes to models.py need a new revision, never an edit
here (`engine.store.migrate.check` reports any drift between models.py and the database).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: UtcDateTime's storage type; migrations do not import models, which keep changing.
UTC_DATETIME = sa.DateTime(timezone=True)
DEFAULT_POOL_SLOTS = 128


def upgrade() -> None:
    op.create_table(
        "alert",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(length=500), nullable=False),
        sa.Column("event", sa.String(length=50), nullable=False),
        sa.Column("severity", sa.String(length=20), nullable=False),
        sa.Column("route", sa.String(length=250), nullable=True),
        sa.Column("dag_id", sa.String(length=250), nullable=True),
        sa.Column("run_id", sa.String(length=250), nullable=True),
        sa.Column("task_id", sa.String(length=250), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("next_attempt_at", UTC_DATETIME, nullable=True),
        sa.Column("sent_at", UTC_DATETIME, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_alert_fingerprint")),
    )
    op.create_index(
        "ix_alert_status_next_attempt_at", "alert", ["status", "next_attempt_at"], unique=False
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("actor", sa.String(length=250), nullable=False),
        sa.Column("event", sa.String(length=100), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=True),
        sa.Column("run_id", sa.String(length=250), nullable=True),
        sa.Column("task_id", sa.String(length=250), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_table(
        "callback",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=True),
        sa.Column("try_number", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("callback", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback")),
    )
    op.create_index("ix_callback_dag_id_run_id", "callback", ["dag_id", "run_id"], unique=False)
    op.create_table(
        "connection",
        sa.Column("conn_id", sa.String(length=250), nullable=False),
        sa.Column("conn_type", sa.String(length=100), nullable=False),
        sa.Column("host", sa.String(length=500), nullable=True),
        sa.Column("schema", sa.String(length=500), nullable=True),
        sa.Column("login", sa.String(length=500), nullable=True),
        sa.Column("password", sa.LargeBinary(), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("extra", sa.LargeBinary(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("conn_id", name=op.f("pk_connection")),
    )
    op.create_table(
        "dag",
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("fileloc", sa.Text(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("is_paused", sa.Boolean(), nullable=False),
        sa.Column("schedule", sa.String(length=250), nullable=True),
        sa.Column("owner", sa.String(length=250), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("serialized", sa.JSON(), nullable=False),
        sa.Column("dag_hash", sa.String(length=64), nullable=False),
        sa.Column("task_count", sa.Integer(), nullable=False),
        sa.Column("last_parsed", UTC_DATETIME, nullable=True),
        sa.Column("next_dagrun", UTC_DATETIME, nullable=True),
        sa.Column("next_dagrun_data_interval_start", UTC_DATETIME, nullable=True),
        sa.Column("next_dagrun_data_interval_end", UTC_DATETIME, nullable=True),
        sa.Column("next_dagrun_create_after", UTC_DATETIME, nullable=True),
        sa.Column("max_active_runs", sa.Integer(), nullable=True),
        sa.Column("max_active_tasks", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("dag_id", name=op.f("pk_dag")),
    )
    op.create_index(
        "ix_dag_next_dagrun_create_after",
        "dag",
        ["is_active", "is_paused", "next_dagrun_create_after"],
        unique=False,
    )
    op.create_table(
        "dag_file",
        sa.Column("fileloc", sa.String(length=1000), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("last_parsed", UTC_DATETIME, nullable=False),
        sa.Column("parse_duration", sa.Float(), nullable=False),
        sa.Column("dag_count", sa.Integer(), nullable=False),
        sa.Column("task_count", sa.Integer(), nullable=False),
        sa.Column("has_import_error", sa.Boolean(), nullable=False),
        sa.Column("timed_out", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("fileloc", name=op.f("pk_dag_file")),
    )
    op.create_table(
        "dag_run",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("run_type", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("logical_date", UTC_DATETIME, nullable=False),
        sa.Column("data_interval_start", UTC_DATETIME, nullable=True),
        sa.Column("data_interval_end", UTC_DATETIME, nullable=True),
        sa.Column("queued_at", UTC_DATETIME, nullable=True),
        sa.Column("start_date", UTC_DATETIME, nullable=True),
        sa.Column("end_date", UTC_DATETIME, nullable=True),
        sa.Column("conf", sa.JSON(), nullable=False),
        sa.Column("external_trigger", sa.Boolean(), nullable=False),
        sa.Column("dag_hash", sa.String(length=64), nullable=True),
        sa.Column("last_scheduling_decision", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dag_run")),
        sa.UniqueConstraint("dag_id", "logical_date", name=op.f("uq_dag_run_dag_id_logical_date")),
        sa.UniqueConstraint("dag_id", "run_id", name=op.f("uq_dag_run_dag_id_run_id")),
    )
    op.create_index("ix_dag_run_state_dag_id", "dag_run", ["state", "dag_id"], unique=False)
    op.create_table(
        "import_error",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("filename", sa.String(length=1000), nullable=False),
        sa.Column("timestamp", UTC_DATETIME, nullable=False),
        sa.Column("stacktrace", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_error")),
        sa.UniqueConstraint("filename", name=op.f("uq_import_error_filename")),
    )
    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_type", sa.String(length=30), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("hostname", sa.String(length=250), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("start_date", UTC_DATETIME, nullable=False),
        sa.Column("end_date", UTC_DATETIME, nullable=True),
        sa.Column("latest_heartbeat", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job")),
    )
    op.create_index("ix_job_job_type_state", "job", ["job_type", "state"], unique=False)
    op.create_table(
        "pool",
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_pool")),
    )
    op.create_table(
        "sla_miss",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=False),
        sa.Column("deadline", UTC_DATETIME, nullable=False),
        sa.Column("detected_at", UTC_DATETIME, nullable=False),
        sa.Column("notified", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_miss")),
        sa.UniqueConstraint(
            "kind",
            "dag_id",
            "run_id",
            "task_id",
            name=op.f("uq_sla_miss_kind_dag_id_run_id_task_id"),
        ),
    )
    op.create_table(
        "state_transition",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("entity", sa.String(length=20), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=True),
        sa.Column("map_index", sa.Integer(), nullable=True),
        sa.Column("try_number", sa.Integer(), nullable=True),
        sa.Column("from_state", sa.String(length=20), nullable=False),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_state_transition")),
    )
    op.create_index(
        "ix_state_transition_dag_id_run_id", "state_transition", ["dag_id", "run_id"], unique=False
    )
    op.create_table(
        "variable",
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("val", sa.LargeBinary(), nullable=False),
        sa.Column("is_secret", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_variable")),
    )
    op.create_table(
        "task_instance",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=False),
        sa.Column("map_index", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("max_tries", sa.Integer(), nullable=False),
        sa.Column("operator", sa.String(length=250), nullable=True),
        sa.Column("pool", sa.String(length=250), nullable=False),
        sa.Column("pool_slots", sa.Integer(), nullable=False),
        sa.Column("priority_weight", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=250), nullable=False),
        sa.Column("scheduled_at", UTC_DATETIME, nullable=True),
        sa.Column("queued_at", UTC_DATETIME, nullable=True),
        sa.Column("start_date", UTC_DATETIME, nullable=True),
        sa.Column("end_date", UTC_DATETIME, nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("next_retry_at", UTC_DATETIME, nullable=True),
        sa.Column("hostname", sa.String(length=250), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("last_heartbeat", UTC_DATETIME, nullable=True),
        sa.Column("executor", sa.String(length=50), nullable=True),
        sa.ForeignKeyConstraint(
            ["dag_id", "run_id"],
            ["dag_run.dag_id", "dag_run.run_id"],
            name=op.f("fk_task_instance_dag_id_run_id_dag_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_instance")),
        sa.UniqueConstraint(
            "dag_id",
            "run_id",
            "task_id",
            "map_index",
            name=op.f("uq_task_instance_dag_id_run_id_task_id_map_index"),
        ),
    )
    op.create_index(
        "ix_task_instance_dag_id_state", "task_instance", ["dag_id", "state"], unique=False
    )
    op.create_index("ix_task_instance_state_pool", "task_instance", ["state", "pool"], unique=False)
    op.create_table(
        "xcom",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=False),
        sa.Column("map_index", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("timestamp", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["dag_id", "run_id"],
            ["dag_run.dag_id", "dag_run.run_id"],
            name=op.f("fk_xcom_dag_id_run_id_dag_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_xcom")),
        sa.UniqueConstraint(
            "dag_id",
            "run_id",
            "task_id",
            "map_index",
            "key",
            name=op.f("uq_xcom_dag_id_run_id_task_id_map_index_key"),
        ),
    )
    op.create_table(
        "task_try",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ti_id", sa.Integer(), nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=False),
        sa.Column("map_index", sa.Integer(), nullable=False),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("start_date", UTC_DATETIME, nullable=True),
        sa.Column("end_date", UTC_DATETIME, nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("hostname", sa.String(length=250), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["ti_id"],
            ["task_instance.id"],
            name=op.f("fk_task_try_ti_id_task_instance"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_try")),
        sa.UniqueConstraint("ti_id", "try_number", name=op.f("uq_task_try_ti_id_try_number")),
    )
    op.create_index("ix_task_try_dag_id_run_id", "task_try", ["dag_id", "run_id"], unique=False)

    slots = context.config.attributes.get("default_pool_slots", DEFAULT_POOL_SLOTS)
    pool = sa.table(
        "pool",
        sa.column("name", sa.String),
        sa.column("slots", sa.Integer),
        sa.column("description", sa.Text),
    )
    op.bulk_insert(pool, [{"name": "default_pool", "slots": slots, "description": "Default pool"}])


def downgrade() -> None:
    op.drop_index("ix_task_try_dag_id_run_id", table_name="task_try")
    op.drop_table("task_try")
    op.drop_table("xcom")
    op.drop_index("ix_task_instance_state_pool", table_name="task_instance")
    op.drop_index("ix_task_instance_dag_id_state", table_name="task_instance")
    op.drop_table("task_instance")
    op.drop_table("variable")
    op.drop_index("ix_state_transition_dag_id_run_id", table_name="state_transition")
    op.drop_table("state_transition")
    op.drop_table("sla_miss")
    op.drop_table("pool")
    op.drop_index("ix_job_job_type_state", table_name="job")
    op.drop_table("job")
    op.drop_table("import_error")
    op.drop_index("ix_dag_run_state_dag_id", table_name="dag_run")
    op.drop_table("dag_run")
    op.drop_table("dag_file")
    op.drop_index("ix_dag_next_dagrun_create_after", table_name="dag")
    op.drop_table("dag")
    op.drop_table("connection")
    op.drop_index("ix_callback_dag_id_run_id", table_name="callback")
    op.drop_table("callback")
    op.drop_table("audit_log")
    op.drop_index("ix_alert_status_next_attempt_at", table_name="alert")
    op.drop_table("alert")
