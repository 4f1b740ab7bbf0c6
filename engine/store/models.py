"""The metastore's tables.

Times are stored as timezone-aware UTC (`UtcDateTime`), states as the strings of
`engine.states`. Tables that later features fill (sla_miss, alert, job) are declared
here from the start so that one migration history describes the whole schema.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Dialect

from engine import masking

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_LEN = 250


class UtcDateTime(TypeDecorator[datetime]):
    """A DateTime that is always timezone-aware UTC, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored; use an aware one")
        value = value.astimezone(UTC)
        # SQLite stores text: drop the offset so comparisons in SQL stay lexical and correct.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class MaskedText(TypeDecorator[str]):
    """Text that can carry user content (errors, reasons): secrets this process knows are
    masked as it is written, whichever statement writes it (`engine.masking`)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return masking.redact(value) if isinstance(value, str) else value


class MaskedJSON(TypeDecorator[Any]):
    """JSON that can carry user content (alert payloads, audit details), masked as written."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return masking.redact_value(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    if TYPE_CHECKING:
        # Every model maps one table; SQLAlchemy types `__table__` as the wider FromClause.
        __table__: ClassVar[Table]


class Dag(Base):
    """One DAG as last parsed: its serialized structure and its scheduling state."""

    __tablename__ = "dag"

    dag_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    fileloc: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_paused: Mapped[bool] = mapped_column(Boolean, default=False)
    schedule: Mapped[str | None] = mapped_column(String(ID_LEN))
    owner: Mapped[str | None] = mapped_column(String(ID_LEN))
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    serialized: Mapped[dict[str, Any]] = mapped_column(JSON)
    dag_hash: Mapped[str] = mapped_column(String(64))
    task_count: Mapped[int] = mapped_column(Integer, default=0)
    last_parsed: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_dagrun: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_dagrun_data_interval_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_dagrun_data_interval_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_dagrun_create_after: Mapped[datetime | None] = mapped_column(UtcDateTime)
    max_active_runs: Mapped[int | None] = mapped_column(Integer)
    max_active_tasks: Mapped[int | None] = mapped_column(Integer)
    #: `DAG(dag_display_name=...)`, None when it is the dag_id
    dag_display_name: Mapped[str | None] = mapped_column(String(2000))

    __table_args__ = (
        Index(
            "ix_dag_next_dagrun_create_after", "is_active", "is_paused", "next_dagrun_create_after"
        ),
    )


class DagFile(Base):
    """One DAG file and the outcome of its last parse."""

    __tablename__ = "dag_file"

    fileloc: Mapped[str] = mapped_column(String(1000), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    last_parsed: Mapped[datetime] = mapped_column(UtcDateTime)
    parse_duration: Mapped[float] = mapped_column(Float)
    dag_count: Mapped[int] = mapped_column(Integer, default=0)
    task_count: Mapped[int] = mapped_column(Integer, default=0)
    has_import_error: Mapped[bool] = mapped_column(Boolean, default=False)
    timed_out: Mapped[bool] = mapped_column(Boolean, default=False)


class ImportError_(Base):
    """Why a DAG file could not be loaded; one row per broken file."""

    __tablename__ = "import_error"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    filename: Mapped[str] = mapped_column(String(1000), unique=True)
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime)  #: last seen (the last parse)
    stacktrace: Mapped[str] = mapped_column(MaskedText)
    #: when the file was first found broken (it stays while the file stays broken)
    first_seen: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DagRun(Base):
    """One run of a DAG for one logical date."""

    __tablename__ = "dag_run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_type: Mapped[str] = mapped_column(String(20))  # scheduled | manual | backfill | test
    state: Mapped[str] = mapped_column(String(20))
    logical_date: Mapped[datetime] = mapped_column(UtcDateTime)
    data_interval_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    data_interval_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    start_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    conf: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    external_trigger: Mapped[bool] = mapped_column(Boolean, default=False)
    dag_hash: Mapped[str | None] = mapped_column(String(64))
    last_scheduling_decision: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("dag_id", "run_id"),
        UniqueConstraint("dag_id", "logical_date"),
        Index("ix_dag_run_state_dag_id", "state", "dag_id"),
        # "when did this DAG last succeed" (an incident resolves): one index lookup
        Index("ix_dag_run_dag_id_state_end_date", "dag_id", "state", "end_date"),
    )


class TaskInstance(Base):
    """One task in one DAG run; `try_number` counts its tries (the pokes of a sensor in
    reschedule mode are attempts of one try)."""

    __tablename__ = "task_instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_id: Mapped[str] = mapped_column(String(ID_LEN))
    task_id: Mapped[str] = mapped_column(String(ID_LEN))
    map_index: Mapped[int] = mapped_column(Integer, default=-1)
    state: Mapped[str] = mapped_column(String(20))
    try_number: Mapped[int] = mapped_column(Integer, default=0)
    max_tries: Mapped[int] = mapped_column(Integer, default=0)
    operator: Mapped[str | None] = mapped_column(String(ID_LEN))
    pool: Mapped[str] = mapped_column(String(ID_LEN), default="default_pool")
    pool_slots: Mapped[int] = mapped_column(Integer, default=1)
    priority_weight: Mapped[int] = mapped_column(Integer, default=1)
    queue: Mapped[str] = mapped_column(String(ID_LEN), default="default")
    scheduled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    start_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    duration: Mapped[float | None] = mapped_column(Float)
    # "not before": when an up_for_retry task may retry, and also when an up_for_reschedule
    # sensor (reschedule mode) pokes next; the scheduler moves either to scheduled after it
    next_retry_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    hostname: Mapped[str | None] = mapped_column(String(ID_LEN))
    pid: Mapped[int | None] = mapped_column(Integer)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UtcDateTime)
    executor: Mapped[str | None] = mapped_column(String(50))
    #: the scheduler job that queued the current attempt: when that scheduler dies, another
    #: one adopts what it queued but never handed to a worker
    queued_by_job_id: Mapped[int | None] = mapped_column(Integer)
    #: the id of the message carrying the queued attempt (the Celery task id), written in
    #: the transaction that queues it: a worker runs only the message this names
    external_executor_id: Mapped[str | None] = mapped_column(String(ID_LEN))

    __table_args__ = (
        UniqueConstraint("dag_id", "run_id", "task_id", "map_index"),
        ForeignKeyConstraint(
            ["dag_id", "run_id"], ["dag_run.dag_id", "dag_run.run_id"], ondelete="CASCADE"
        ),
        Index("ix_task_instance_state_pool", "state", "pool"),
        Index("ix_task_instance_dag_id_state", "dag_id", "state"),
        # the scheduler's queue, read in order: no sort of every scheduled row per tick
        Index(
            "ix_task_instance_queue_order",
            "state",
            text("priority_weight DESC"),
            "scheduled_at",
            "id",
        ),
        # "does this run still have unfinished tasks": stops at the first one
        Index("ix_task_instance_run_state", "dag_id", "run_id", "state"),
        # what a dead scheduler queued (adoption by the others)
        Index("ix_task_instance_state_queued_by", "state", "queued_by_job_id"),
    )


class TaskTry(Base):
    """One try of a task instance, kept for history after a retry or clear.

    A sensor in reschedule mode keeps its try open (no end_date, state up_for_reschedule)
    between pokes; its start_date is the first poke, where the sensor's timeout counts from.
    """

    __tablename__ = "task_try"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ti_id: Mapped[int] = mapped_column(Integer)
    dag_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_id: Mapped[str] = mapped_column(String(ID_LEN))
    task_id: Mapped[str] = mapped_column(String(ID_LEN))
    map_index: Mapped[int] = mapped_column(Integer, default=-1)
    try_number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    start_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    duration: Mapped[float | None] = mapped_column(Float)
    hostname: Mapped[str | None] = mapped_column(String(ID_LEN))
    pid: Mapped[int | None] = mapped_column(Integer)
    log_path: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(MaskedText)
    #: the pool and slots this try held, and when it was scheduled and queued (the console's
    #: capacity history: slots are held from queued to end, waited for from scheduled)
    pool: Mapped[str | None] = mapped_column(String(ID_LEN))
    pool_slots: Mapped[int | None] = mapped_column(Integer)
    scheduled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: the error's signature (`engine.store.error_signature`), written with it: failures group by it
    error_signature: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        UniqueConstraint("ti_id", "try_number"),
        ForeignKeyConstraint(["ti_id"], ["task_instance.id"], ondelete="CASCADE"),
        Index("ix_task_try_dag_id_run_id", "dag_id", "run_id"),
        # the tries of a time window (the capacity page)
        Index("ix_task_try_end_date", "end_date"),
        # the failures of a window grouped by signature, with their DAGs and tasks, read
        # from the index alone (console Failures page)
        Index(
            "ix_task_try_end_date_state_error_signature_dag_id_task_id",
            "end_date",
            "state",
            "error_signature",
            "dag_id",
            "task_id",
        ),
    )


class StateTransition(Base):
    """An event row for every state change of a task instance or DAG run."""

    __tablename__ = "state_transition"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    entity: Mapped[str] = mapped_column(String(20))  # task_instance | dag_run
    dag_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_id: Mapped[str] = mapped_column(String(ID_LEN))
    task_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    map_index: Mapped[int | None] = mapped_column(Integer)
    try_number: Mapped[int | None] = mapped_column(Integer)
    from_state: Mapped[str] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(MaskedText)

    __table_args__ = (Index("ix_state_transition_dag_id_run_id", "dag_id", "run_id"),)


class CallbackRecord(Base):
    """The outcome of one callback (task or DAG), so a failing callback is visible."""

    __tablename__ = "callback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    dag_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_id: Mapped[str] = mapped_column(String(ID_LEN))
    task_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    try_number: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(50))  # on_success_callback, ...
    callback: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20))  # success | failed
    duration: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(MaskedText)

    __table_args__ = (Index("ix_callback_dag_id_run_id", "dag_id", "run_id"),)


class CallbackRequest(Base):
    """A callback to run (DAG run ended, SLA missed, zombie failed), written with its cause
    and kept until it ran, so a scheduler that dies before running it leaves it to the next."""

    __tablename__ = "callback_request"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_id: Mapped[str] = mapped_column(String(ID_LEN))
    task_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    map_index: Mapped[int] = mapped_column(Integer, default=-1, server_default="-1")
    kind: Mapped[str] = mapped_column(String(50))
    fileloc: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(MaskedText)
    state: Mapped[str] = mapped_column(String(20))  # pending | done
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: the scheduler job that handed it to its executor last
    queued_by: Mapped[int | None] = mapped_column(Integer)
    #: times it was handed to an executor
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_callback_request_state", "state", "created_at"),)


class Pool(Base):
    """A named set of slots that limits how many tasks using it run at once."""

    __tablename__ = "pool"

    name: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    slots: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")


class XCom(Base):
    """A value a task passed on (JSON), keyed by task instance and key."""

    __tablename__ = "xcom"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_id: Mapped[str] = mapped_column(String(ID_LEN))
    task_id: Mapped[str] = mapped_column(String(ID_LEN))
    map_index: Mapped[int] = mapped_column(Integer, default=-1)
    key: Mapped[str] = mapped_column(String(512))
    value: Mapped[Any] = mapped_column(JSON)
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("dag_id", "run_id", "task_id", "map_index", "key"),
        ForeignKeyConstraint(
            ["dag_id", "run_id"], ["dag_run.dag_id", "dag_run.run_id"], ondelete="CASCADE"
        ),
    )


class Variable(Base):
    """A key/value setting for DAGs; the value is Fernet-encrypted."""

    __tablename__ = "variable"

    key: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    val: Mapped[bytes] = mapped_column(LargeBinary)
    is_secret: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(Text)


class Connection(Base):
    """Where and how to reach an external system; password and extra are encrypted."""

    __tablename__ = "connection"

    conn_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    conn_type: Mapped[str] = mapped_column(String(100))
    host: Mapped[str | None] = mapped_column(String(500))
    schema: Mapped[str | None] = mapped_column(String(500))
    login: Mapped[str | None] = mapped_column(String(500))
    password: Mapped[bytes | None] = mapped_column(LargeBinary)
    port: Mapped[int | None] = mapped_column(Integer)
    extra: Mapped[bytes | None] = mapped_column(LargeBinary)
    description: Mapped[str | None] = mapped_column(Text)


class SlaMiss(Base):
    """A task SLA or DAG-run deadline that passed; recorded once per miss."""

    __tablename__ = "sla_miss"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))  # task_sla | dag_deadline
    dag_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_id: Mapped[str] = mapped_column(String(ID_LEN))
    task_id: Mapped[str] = mapped_column(String(ID_LEN), default="")
    deadline: Mapped[datetime] = mapped_column(UtcDateTime)
    detected_at: Mapped[datetime] = mapped_column(UtcDateTime)
    notified: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the task's (task_sla) or run's (dag_deadline) state when the miss was detected
    state: Mapped[str | None] = mapped_column(String(20))

    __table_args__ = (
        UniqueConstraint("kind", "dag_id", "run_id", "task_id"),
        Index("ix_sla_miss_detected_at", "detected_at"),
    )


class Alert(Base):
    """The notification outbox: one row per event to deliver, with its delivery record."""

    __tablename__ = "alert"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(500), unique=True)
    event: Mapped[str] = mapped_column(String(50))
    severity: Mapped[str] = mapped_column(String(20), default="error")
    route: Mapped[str | None] = mapped_column(String(ID_LEN))
    dag_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    run_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    task_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    payload: Mapped[dict[str, Any]] = mapped_column(MaskedJSON, default=dict)
    status: Mapped[str] = mapped_column(String(20))  # pending | sent | failed | suppressed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(MaskedText)
    #: route|event|dag|task: repeated alerts of one key within the group window go out as one
    group_key: Mapped[str | None] = mapped_column(String(1000))
    #: how many alerts this delivery stands for (itself and those grouped into it)
    count: Mapped[int] = mapped_column(Integer, default=1)
    #: where it goes (its route, or a notifier's target): one delivery per channel at a time
    channel: Mapped[str | None] = mapped_column(String(ID_LEN))
    #: when it entered the queue (created, or resent): delivery is retried until alerts.max_age
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: the incident this alert was grouped into (then it is told in the incident's pages)
    incident_id: Mapped[int | None] = mapped_column(Integer)
    #: a delivery of it was interrupted (the dispatcher died mid-send): the channel may have
    #: it twice; its next message says so
    possible_duplicate: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: the dispatcher (hostname:pid) holding its current delivery, until it is recorded
    claimed_by: Mapped[str | None] = mapped_column(String(ID_LEN))

    __table_args__ = (
        Index("ix_alert_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_alert_group_key_status", "group_key", "status"),
        Index("ix_alert_route_sent_at", "route", "sent_at"),
        Index("ix_alert_created_at", "created_at"),
        Index("ix_alert_dag_id_task_id", "dag_id", "task_id"),
        Index("ix_alert_incident_id", "incident_id"),
    )


class AlertIncident(Base):
    """Alerts of one route grouped by its group_by values (one DAG run by default), paged
    as one: a first page after group_wait, updates every group_interval, then resolved."""

    __tablename__ = "alert_incident"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    route: Mapped[str] = mapped_column(String(ID_LEN))
    #: route and group values: the incident alerts of these values join while it is open
    group_key: Mapped[str] = mapped_column(String(1000))
    #: the group key while open, NULL once resolved (one open incident per group)
    open_key: Mapped[str | None] = mapped_column(String(1000), unique=True)
    #: the stable key every page carries (the channel's dedup key: PagerDuty, Opsgenie...)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    #: the group's values: {"dag_id": ..., "run_id": ...}
    group: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dag_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    run_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    status: Mapped[str] = mapped_column(String(20))  # open | resolved
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: when its latest alert happened
    last_alert_at: Mapped[datetime] = mapped_column(UtcDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: alerts grouped in it, and how many of them its latest page told
    alerts: Mapped[int] = mapped_column(Integer, default=0)
    paged_alerts: Mapped[int] = mapped_column(Integer, default=0)
    #: when its next page is due (NULL: nothing new to tell)
    next_page_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    last_page_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: the outbox row of its latest page
    last_page_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_alert_incident_next_page_at", "next_page_at"),
        Index("ix_alert_incident_status_id", "status", "id"),
    )


class AlertDelivery(Base):
    """One delivery attempt of an alert: its outcome, latency and the channel's error text."""

    __tablename__ = "alert_delivery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: sent | failed | timeout (no answer within alerts.delivery_timeout: outcome unknown)
    status: Mapped[str] = mapped_column(String(20))
    latency: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(MaskedText)

    __table_args__ = (
        Index("ix_alert_delivery_alert_id", "alert_id"),
        Index("ix_alert_delivery_at", "at"),
    )


class Job(Base):
    """A long-running dagwatch process (scheduler, worker) and its heartbeat."""

    __tablename__ = "job"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_type: Mapped[str] = mapped_column(String(30))
    state: Mapped[str] = mapped_column(String(20))  # running | success | failed
    hostname: Mapped[str] = mapped_column(String(ID_LEN))
    pid: Mapped[int] = mapped_column(Integer)
    start_date: Mapped[datetime] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    latest_heartbeat: Mapped[datetime] = mapped_column(UtcDateTime)
    #: seconds the last scheduler loop took, written with the heartbeat (the console shows it)
    last_loop_seconds: Mapped[float | None] = mapped_column(Float)
    #: executor slots in use and open at the last heartbeat (scheduler jobs)
    slots_used: Mapped[int | None] = mapped_column(Integer)
    slots_open: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_job_job_type_state", "job_type", "state"),)


class Worker(Base):
    """A `dagwatch worker` (Celery) process: its queues, slots and heartbeat."""

    __tablename__ = "worker"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(ID_LEN), unique=True)  #: the Celery node name
    hostname: Mapped[str] = mapped_column(String(ID_LEN))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[str] = mapped_column(String(1000))  #: comma-separated
    concurrency: Mapped[int] = mapped_column(Integer)
    #: attempts running at the last heartbeat, by queue ({"default": 2})
    running: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(20))  # running | success | failed
    start_date: Mapped[datetime] = mapped_column(UtcDateTime)
    latest_heartbeat: Mapped[datetime] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_worker_state_heartbeat", "state", "latest_heartbeat"),)


class AuditLog(Base):
    """Who did what, from the CLI or the console."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(ID_LEN))
    event: Mapped[str] = mapped_column(String(100))
    dag_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    run_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    task_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    extra: Mapped[dict[str, Any]] = mapped_column(MaskedJSON, default=dict)


class ConsoleUser(Base):
    """A console user: a role and a slow salted hash of the password (never the password)."""

    __tablename__ = "console_user"

    username: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))  # viewer | operator | admin
    password_hash: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_login: Mapped[datetime | None] = mapped_column(UtcDateTime)


class RenderedFields(Base):
    """The template fields of a task instance as its latest attempt rendered them (secrets
    masked), so operators can see what ran without importing the DAG."""

    __tablename__ = "rendered_fields"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(String(ID_LEN))
    run_id: Mapped[str] = mapped_column(String(ID_LEN))
    task_id: Mapped[str] = mapped_column(String(ID_LEN))
    map_index: Mapped[int] = mapped_column(Integer, default=-1)
    try_number: Mapped[int] = mapped_column(Integer)
    fields: Mapped[dict[str, Any]] = mapped_column(MaskedJSON, default=dict)

    __table_args__ = (
        UniqueConstraint("dag_id", "run_id", "task_id", "map_index"),
        ForeignKeyConstraint(
            ["dag_id", "run_id"], ["dag_run.dag_id", "dag_run.run_id"], ondelete="CASCADE"
        ),
    )


class CapacityBucket(Base):
    """One closed minute of one limit (a pool, or the executor as `limit_name` "executor"):
    the per-second figures of the capacity page summed (or maxed) over the minute, written
    by the console's rollup service outside the scheduler's tick and pruned by age."""

    __tablename__ = "capacity_bucket"

    limit_name: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    seconds_full: Mapped[int] = mapped_column(Integer)
    slot_seconds: Mapped[float] = mapped_column(Float)
    peak_used: Mapped[float] = mapped_column(Float)
    peak_demand: Mapped[float] = mapped_column(Float)
    waited: Mapped[float] = mapped_column(Float)
    waited_full: Mapped[float] = mapped_column(Float)
    waited_executor_only: Mapped[float] = mapped_column(Float)
    started: Mapped[int] = mapped_column(Integer)
    held_at_start: Mapped[int] = mapped_column(Integer)
    #: waits (seconds, comma-separated) of the tries that got their slot in the minute
    waits: Mapped[str] = mapped_column(Text, default="")
    #: executor only: the longest of those waits, "source:id:seconds" comma-separated
    longest: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_capacity_bucket_minute", "minute"),)
