"""DAG runs, their task instances, attempts, XComs and callback records.

State changes never happen here: they go through `engine.store.transitions`.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from engine import masking
from engine.exceptions import NotFound
from engine.states import DagRunState, TaskState
from engine.store import error_signature
from engine.store.db import affected_rows
from engine.store.models import (
    CallbackRecord,
    DagRun,
    RenderedFields,
    SlaMiss,
    StateTransition,
    TaskInstance,
    TaskTry,
    XCom,
)
from engine.store.transitions import CHUNK_SIZE


def create_dag_run(
    session: Session,
    serialized_dag: Mapping[str, Any],
    *,
    run_id: str,
    run_type: str,
    logical_date: datetime,
    data_interval: tuple[datetime, datetime] | None,
    conf: Mapping[str, Any] | None,
    state: DagRunState,
    now: datetime,
    dag_hash: str | None = None,
) -> DagRun:
    """Insert a run and one task instance per task, in one batch."""
    run = DagRun(
        dag_id=serialized_dag["dag_id"],
        run_id=run_id,
        run_type=run_type,
        state=state.value,
        logical_date=logical_date,
        data_interval_start=data_interval[0] if data_interval else None,
        data_interval_end=data_interval[1] if data_interval else None,
        queued_at=now,
        start_date=now if state is DagRunState.RUNNING else None,
        conf=dict(conf or {}),
        external_trigger=run_type != "scheduled",
        dag_hash=dag_hash,
    )
    session.add(run)
    session.flush()
    rows = [
        {
            "dag_id": run.dag_id,
            "run_id": run_id,
            "task_id": task["task_id"],
            "map_index": -1,
            "state": TaskState.NONE.value,
            "try_number": 0,
            "max_tries": task.get("retries", 0),
            "operator": task.get("operator"),
            "pool": task.get("pool", "default_pool"),
            "pool_slots": task.get("pool_slots", 1),
            "priority_weight": task.get("priority_weight_total", task.get("priority_weight", 1)),
            "queue": task.get("queue", "default"),
        }
        for task in serialized_dag["tasks"]
    ]
    if rows:
        session.execute(insert(TaskInstance), rows)
    return run


def get_dag_run(session: Session, dag_id: str, run_id: str) -> DagRun:
    row = session.execute(
        select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"DAG run {run_id!r} of DAG {dag_id!r} not found")
    return row


def find_dag_run_by_date(session: Session, dag_id: str, logical_date: datetime) -> DagRun | None:
    return session.execute(
        select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date)
    ).scalar_one_or_none()


def previous_logical_date(
    session: Session, dag_id: str, before: datetime, state: str | None = None
) -> datetime | None:
    """The logical date of the DAG's latest run before `before` (in `state` if given);
    served by the (dag_id, logical_date) unique index."""
    query = select(DagRun.logical_date).where(DagRun.dag_id == dag_id, DagRun.logical_date < before)
    if state is not None:
        query = query.where(DagRun.state == state)
    return session.execute(query.order_by(DagRun.logical_date.desc()).limit(1)).scalar()


#: a task instance, its run's state and its run's id
TaskInstanceWithRun = tuple[TaskInstance, str, int]


def task_instances_with_runs(
    session: Session,
    dag_id: str,
    *,
    run_ids: Collection[str] | None = None,
    task_ids: Collection[str] | None = None,
    states: Collection[str] | None = None,
) -> list[TaskInstanceWithRun]:
    """Task instances with their run's state, in one query (per CHUNK_SIZE runs)."""
    query = (
        select(TaskInstance, DagRun.state, DagRun.id)
        .join(
            DagRun,
            and_(DagRun.dag_id == TaskInstance.dag_id, DagRun.run_id == TaskInstance.run_id),
        )
        .where(TaskInstance.dag_id == dag_id)
        .order_by(DagRun.logical_date, TaskInstance.id)
    )
    if task_ids is not None:
        query = query.where(TaskInstance.task_id.in_(sorted(task_ids)))
    if states is not None:
        query = query.where(TaskInstance.state.in_(sorted(states)))
    if run_ids is None:
        return [tuple(row) for row in session.execute(query)]  # type: ignore[misc]
    ids = sorted(run_ids)
    found: list[TaskInstanceWithRun] = []
    for start in range(0, len(ids), CHUNK_SIZE):
        chunk = query.where(TaskInstance.run_id.in_(ids[start : start + CHUNK_SIZE]))
        found.extend(tuple(row) for row in session.execute(chunk))  # type: ignore[misc]
    return found


def delete_xcoms(session: Session, dag_id: str, task_ids_by_run: Mapping[str, set[str]]) -> None:
    """One DELETE per distinct set of cleared tasks (usually one), not one per run."""
    runs_by_tasks: dict[frozenset[str], list[str]] = defaultdict(list)
    for run_id, task_ids in task_ids_by_run.items():
        runs_by_tasks[frozenset(task_ids)].append(run_id)
    for cleared, run_ids in runs_by_tasks.items():
        for start in range(0, len(run_ids), CHUNK_SIZE):
            session.execute(
                delete(XCom).where(
                    XCom.dag_id == dag_id,
                    XCom.run_id.in_(run_ids[start : start + CHUNK_SIZE]),
                    XCom.task_id.in_(sorted(cleared)),
                )
            )


def runs_with_id_or_date(
    session: Session, dag_id: str, run_id: str, logical_date: datetime
) -> list[Any]:
    """The runs of `dag_id` with this run id or at this logical date (run_id, logical_date)."""
    return list(
        session.execute(
            select(DagRun.run_id, DagRun.logical_date)
            .where(DagRun.dag_id == dag_id)
            .where((DagRun.run_id == run_id) | (DagRun.logical_date == logical_date))
        ).all()
    )


def runs_between(session: Session, dag_id: str, first: datetime, last: datetime) -> list[DagRun]:
    """The runs of `dag_id` with a logical date from `first` to `last`, both included."""
    return list(
        session.execute(
            select(DagRun).where(
                DagRun.dag_id == dag_id,
                DagRun.logical_date >= first,
                DagRun.logical_date <= last,
            )
        ).scalars()
    )


def sla_misses_of_run(session: Session, dag_id: str, run_id: str) -> list[SlaMiss]:
    """The run's recorded task SLA misses and missed DAG deadline, earliest deadline first."""
    return list(
        session.scalars(
            select(SlaMiss)
            .where(
                SlaMiss.kind.in_(["dag_deadline", "task_sla"]),  # the unique index leads with kind
                SlaMiss.dag_id == dag_id,
                SlaMiss.run_id == run_id,
            )
            .order_by(SlaMiss.deadline, SlaMiss.id)
        )
    )


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def states_at_dates(
    session: Session, dag_id: str, task_ids: Sequence[str] | None, dates: Sequence[datetime]
) -> dict[str, list[tuple[str, str]]]:
    """logical date (ISO, UTC) -> [(task id, state)] of `task_ids` in `dag_id`'s runs at
    `dates`; with no task ids, [(dag_id, run state)]. One query, whatever the number of
    tasks and dates."""
    if task_ids is None:
        query = select(DagRun.logical_date, DagRun.dag_id, DagRun.state).where(
            DagRun.dag_id == dag_id, DagRun.logical_date.in_(dates)
        )
    else:
        query = (
            select(DagRun.logical_date, TaskInstance.task_id, TaskInstance.state)
            .join(
                TaskInstance,
                and_(TaskInstance.dag_id == DagRun.dag_id, TaskInstance.run_id == DagRun.run_id),
            )
            .where(
                DagRun.dag_id == dag_id,
                DagRun.logical_date.in_(dates),
                TaskInstance.task_id.in_(task_ids),
            )
        )
    found: dict[str, list[tuple[str, str]]] = {}
    for when, name, state in session.execute(query):
        found.setdefault(_utc(when).isoformat(), []).append((name, state))
    return found


def delete_dag_run(session: Session, run: DagRun) -> None:
    """Delete a run with its task instances, attempts and XComs."""
    ti_ids = select(TaskInstance.id).where(
        TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id
    )
    session.execute(delete(TaskTry).where(TaskTry.ti_id.in_(ti_ids)))
    for model in (XCom, TaskInstance):
        session.execute(delete(model).where(model.dag_id == run.dag_id, model.run_id == run.run_id))
    session.delete(run)


def list_dag_runs(
    session: Session,
    *,
    dag_id: str | None = None,
    state: DagRunState | None = None,
    limit: int = 100,
) -> list[DagRun]:
    query = select(DagRun).order_by(DagRun.logical_date.desc(), DagRun.id.desc()).limit(limit)
    if dag_id is not None:
        query = query.where(DagRun.dag_id == dag_id)
    if state is not None:
        query = query.where(DagRun.state == state.value)
    return list(session.execute(query).scalars())


def get_task_instances(session: Session, dag_id: str, run_id: str) -> list[TaskInstance]:
    return list(
        session.execute(
            select(TaskInstance)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .order_by(TaskInstance.id)
        ).scalars()
    )


def get_task_instance(session: Session, ti_id: int) -> TaskInstance:
    row = session.get(TaskInstance, ti_id)
    if row is None:
        raise NotFound(f"task instance {ti_id} not found")
    return row


def get_task_instance_and_run(session: Session, ti_id: int) -> tuple[TaskInstance, DagRun]:
    """A task instance with its DAG run, in one query (an attempt needs both to start)."""
    row = session.execute(
        select(TaskInstance, DagRun)
        .outerjoin(
            DagRun, (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id)
        )
        .where(TaskInstance.id == ti_id)
    ).first()
    if row is None:
        raise NotFound(f"task instance {ti_id} not found")
    ti, run = row
    if run is None:
        raise NotFound(f"DAG run {ti.run_id!r} of DAG {ti.dag_id!r} not found")
    return ti, run


#: Core statements built once (an attempt runs each): building an ORM statement for every
#: attempt, and its cache key, cost more than running it (bench/attempt_cpu.py).
_TRIES = TaskTry.__table__
_INSERT_TRY = insert(_TRIES)
_FINISH_TRY = (
    update(_TRIES)
    .where(
        _TRIES.c.ti_id == bindparam("key_ti_id"),
        _TRIES.c.try_number == bindparam("key_try_number"),
    )
    .values(
        state=bindparam("set_state"),
        end_date=bindparam("set_end_date"),
        duration=bindparam("set_duration"),
        error=bindparam("set_error"),
        error_signature=bindparam("set_signature"),
    )
)
_FINISH_OPEN_TRY = _FINISH_TRY.where(_TRIES.c.end_date.is_(None))


def start_try(
    session: Session,
    ti: TaskInstance,
    *,
    hostname: str,
    pid: int | None,
    log_path: str,
    now: datetime,
) -> None:
    """Record the beginning of attempt `ti.try_number` (the caller already moved it to running)."""
    session.execute(
        _INSERT_TRY,
        dict(
            ti_id=ti.id,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            map_index=ti.map_index,
            try_number=ti.try_number,
            state=TaskState.RUNNING.value,
            start_date=now,
            hostname=hostname,
            pid=pid,
            log_path=log_path,
            pool=ti.pool,
            pool_slots=ti.pool_slots,
            scheduled_at=ti.scheduled_at,
            queued_at=ti.queued_at,
        ),
    )


def finish_try(
    session: Session,
    ti_id: int,
    try_number: int,
    *,
    state: TaskState,
    end_date: datetime,
    duration: float,
    error: str | None,
    only_open: bool = False,
) -> None:
    """Record how try `try_number` ended; `only_open`: unless it was closed already (its
    attempt ended after someone else moved the task instance, and maybe closed it)."""
    session.execute(
        _FINISH_OPEN_TRY if only_open else _FINISH_TRY,
        dict(
            key_ti_id=ti_id,
            key_try_number=try_number,
            set_state=state.value,
            set_end_date=end_date,
            set_duration=duration,
            set_error=error,
            set_signature=error_signature.signature(masking.redact(error)) if error else None,
        ),
    )


@dataclass(frozen=True)
class OpenTry:
    """A try whose sensor waits between pokes (reschedule mode): the next poke continues it."""

    try_number: int
    start_date: datetime  #: its first poke, where the sensor's timeout counts from
    reschedules: int  #: how often it was rescheduled so far


def open_rescheduled_try(session: Session, ti_id: int, try_number: int) -> OpenTry | None:
    """The try `try_number` of a task instance if it is open and waiting for its next poke.

    A try stays open (no end_date) in up_for_reschedule between pokes; clearing, a lost
    attempt or a run timeout close it. The reschedules are counted from the transition
    log (this try's running -> up_for_reschedule rows), so no column keeps a counter.
    """
    row = session.execute(
        select(TaskTry).where(
            TaskTry.ti_id == ti_id,
            TaskTry.try_number == try_number,
            TaskTry.state == TaskState.UP_FOR_RESCHEDULE.value,
            TaskTry.end_date.is_(None),
        )
    ).scalar_one_or_none()
    if row is None or row.start_date is None:
        return None
    reschedules = session.execute(
        select(func.count())
        .select_from(StateTransition)
        .where(
            StateTransition.dag_id == row.dag_id,
            StateTransition.run_id == row.run_id,
            StateTransition.task_id == row.task_id,
            StateTransition.map_index == row.map_index,
            StateTransition.try_number == try_number,
            StateTransition.to_state == TaskState.UP_FOR_RESCHEDULE.value,
            StateTransition.at >= row.start_date,  # not a deleted run's namesake
        )
    ).scalar_one()
    return OpenTry(try_number, row.start_date, int(reschedules))


#: The pid of one try, on the task instance and its try row. Plain SQL, for the local
#: executor's worker runs it while it shares its pages with the attempt it just forked:
#: every object a statement touches then costs a page copy, and compiling one touches many.
_ATTEMPT_PID = (
    "UPDATE task_instance SET pid = {0} WHERE id = {0} AND try_number = {0}",
    "UPDATE task_try SET pid = {0} WHERE ti_id = {0} AND try_number = {0}",
)
#: The positional placeholder of each DBAPI paramstyle the metastore's drivers use.
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def record_attempt_pid(connection: Connection, ti_id: int, try_number: int, pid: int) -> None:
    """The pid of a running attempt whose process was forked after it began (the local
    executor's worker records an attempt as running before it forks the attempt)."""
    mark = _PLACEHOLDERS[connection.dialect.paramstyle]
    for statement in _ATTEMPT_PID:
        connection.exec_driver_sql(statement.format(mark), (pid, ti_id, try_number))


def resume_try(
    session: Session, ti_id: int, try_number: int, *, hostname: str, pid: int | None
) -> None:
    """The next poke of a rescheduled try runs: the same try row, running again."""
    session.execute(
        update(TaskTry)
        .where(TaskTry.ti_id == ti_id, TaskTry.try_number == try_number)
        .values(state=TaskState.RUNNING.value, hostname=hostname, pid=pid)
    )


def reschedule_try(session: Session, ti_id: int, try_number: int) -> None:
    """A poke did not find its condition: the try stays open, waiting for the next one."""
    session.execute(
        update(TaskTry)
        .where(TaskTry.ti_id == ti_id, TaskTry.try_number == try_number)
        .values(state=TaskState.UP_FOR_RESCHEDULE.value)
    )


def heartbeat(session: Session, ti_id: int, now: datetime) -> bool:
    """Mark a running attempt alive; not a state change, so not a transition.

    Returns False when the task instance is no longer running (someone else moved it).
    """
    result = session.execute(
        update(TaskInstance)
        .where(TaskInstance.id == ti_id, TaskInstance.state == TaskState.RUNNING.value)
        .values(last_heartbeat=now)
    )
    return bool(affected_rows(result))


def task_instance_state(session: Session, ti_id: int) -> str | None:
    """The state of one task instance (None: it is gone)."""
    return session.execute(select(TaskInstance.state).where(TaskInstance.id == ti_id)).scalar()


def list_tries(session: Session, dag_id: str, run_id: str) -> list[TaskTry]:
    return list(
        session.execute(
            select(TaskTry)
            .where(TaskTry.dag_id == dag_id, TaskTry.run_id == run_id)
            .order_by(TaskTry.task_id, TaskTry.try_number)
        ).scalars()
    )


def set_xcom(
    session: Session,
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    key: str,
    value: Any,
    now: datetime,
    map_index: int = -1,
) -> None:
    """Insert or replace one XCom value."""
    session.execute(
        delete(XCom).where(
            XCom.dag_id == dag_id,
            XCom.run_id == run_id,
            XCom.task_id == task_id,
            XCom.map_index == map_index,
            XCom.key == key,
        )
    )
    session.execute(
        insert(XCom).values(
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index,
            key=key,
            value=value,
            timestamp=now,
        )
    )


def get_xcoms(
    session: Session,
    *,
    dag_id: str,
    run_id: str,
    task_ids: Sequence[str],
    key: str,
    map_index: int | None = -1,
) -> dict[str, Any]:
    """task_id -> value for the tasks that pushed `key` at `map_index`; with map_index None,
    task_id -> the values of all its map indexes, in map-index order."""
    query = select(XCom.task_id, XCom.value).where(
        XCom.dag_id == dag_id,
        XCom.run_id == run_id,
        XCom.task_id.in_(task_ids),
        XCom.key == key,
    )
    if map_index is not None:
        return dict(session.execute(query.where(XCom.map_index == map_index)).all())
    values: dict[str, list[Any]] = {}
    rows = session.execute(query.where(XCom.map_index >= 0).order_by(XCom.map_index))
    for task_id, value in rows:
        values.setdefault(task_id, []).append(value)
    return values


def clear_xcoms(session: Session, *, dag_id: str, run_id: str, task_ids: Iterable[str]) -> None:
    session.execute(
        delete(XCom).where(
            XCom.dag_id == dag_id, XCom.run_id == run_id, XCom.task_id.in_(list(task_ids))
        )
    )


def record_callback(
    session: Session,
    *,
    at: datetime,
    dag_id: str,
    run_id: str,
    task_id: str | None,
    try_number: int | None,
    kind: str,
    callback: str,
    status: str,
    duration: float,
    error: str | None,
) -> None:
    session.execute(
        insert(CallbackRecord).values(
            at=at,
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            try_number=try_number,
            kind=kind,
            callback=callback,
            status=status,
            duration=duration,
            error=error,
        )
    )


def list_callbacks(session: Session, dag_id: str, run_id: str) -> list[CallbackRecord]:
    return list(
        session.execute(
            select(CallbackRecord)
            .where(CallbackRecord.dag_id == dag_id, CallbackRecord.run_id == run_id)
            .order_by(CallbackRecord.id)
        ).scalars()
    )


def set_rendered_fields(
    session: Session,
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int,
    try_number: int,
    fields: dict[str, str],
) -> None:
    """Replace a task instance's rendered template fields with those of this attempt (one
    statement: an attempt's outcome writes them in its transaction)."""
    session.execute(
        _upsert_rendered(session.get_bind().dialect.name),
        dict(
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index,
            try_number=try_number,
            fields=fields,
        ),
    )


@functools.cache
def _upsert_rendered(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE of a rendered_fields row, built once per dialect."""
    table = RenderedFields.__table__
    statement: Any  # each dialect's module only where it is used
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        statement = postgresql_insert(table)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(table)
    return statement.on_conflict_do_update(
        index_elements=[table.c.dag_id, table.c.run_id, table.c.task_id, table.c.map_index],
        set_={"try_number": statement.excluded.try_number, "fields": statement.excluded.fields},
    )
