"""The scheduler's batched reads and writes: one query per question, never one per task.

Each function answers one question the scheduler asks on every tick; the indexes they
need are declared on the models (`ix_task_instance_state_pool`,
`ix_dag_run_state_dag_id`, `ix_dag_next_dagrun_create_after`, ...).
"""

from __future__ import annotations

import socket
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from engine import masking
from engine.states import TASK_UNFINISHED, DagRunState, TaskState, combined_state
from engine.store import error_signature
from engine.store.coordination import skip_locked
from engine.store.models import Dag, DagRun, Job, Pool, TaskInstance, TaskTry, XCom

#: Keys per IN list: one statement per this many runs or task instances.
BATCH = 500


def _batches(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


#: `next_dagrun_create_after` of a DAG that will never create another scheduled run.
NEVER = datetime(9999, 12, 31, tzinfo=UTC)


@dataclass(frozen=True)
class TiRow:
    """The columns of a task instance the scheduler decides on."""

    id: int
    dag_id: str
    run_id: str
    task_id: str
    state: TaskState
    try_number: int
    max_tries: int
    next_retry_at: datetime | None
    pool: str
    pool_slots: int
    priority_weight: int
    queue: str
    last_heartbeat: datetime | None
    pid: int | None
    map_index: int = -1


_TI_COLUMNS = (
    TaskInstance.id,
    TaskInstance.dag_id,
    TaskInstance.run_id,
    TaskInstance.task_id,
    TaskInstance.state,
    TaskInstance.try_number,
    TaskInstance.max_tries,
    TaskInstance.next_retry_at,
    TaskInstance.pool,
    TaskInstance.pool_slots,
    TaskInstance.priority_weight,
    TaskInstance.queue,
    TaskInstance.last_heartbeat,
    TaskInstance.pid,
    TaskInstance.map_index,
)


def _ti_rows(rows: Iterable[Any]) -> list[TiRow]:
    return [TiRow(r[0], r[1], r[2], r[3], TaskState(r[4]), *r[5:]) for r in rows]


# -- DAGs and runs --------------------------------------------------------------------


def due_dags(session: Session, now: datetime) -> list[Dag]:
    """Active, unpaused DAGs whose next scheduled run may be due (or was never computed)."""
    query = select(Dag).where(
        Dag.is_active,
        Dag.is_paused.is_(False),
        (Dag.next_dagrun_create_after.is_(None)) | (Dag.next_dagrun_create_after <= now),
    )
    return list(session.execute(query).scalars())


def dag_rows(session: Session, dag_ids: Iterable[str]) -> dict[str, tuple[str, str, bool]]:
    """dag_id -> (dag_hash, fileloc, is_paused) without loading the serialized structure."""
    ids = list(set(dag_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(Dag.dag_id, Dag.dag_hash, Dag.fileloc, Dag.is_paused).where(Dag.dag_id.in_(ids))
    )
    return {dag_id: (digest, fileloc, paused) for dag_id, digest, fileloc, paused in rows}


def serialized_dags(session: Session, dag_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    ids = list(set(dag_ids))
    if not ids:
        return {}
    rows = session.execute(select(Dag.dag_id, Dag.serialized).where(Dag.dag_id.in_(ids)))
    return dict(rows.all())


def active_run_counts(session: Session) -> dict[str, int]:
    """dag_id -> runs queued or running."""
    rows = session.execute(
        select(DagRun.dag_id, func.count())
        .where(DagRun.state.in_([DagRunState.QUEUED.value, DagRunState.RUNNING.value]))
        .group_by(DagRun.dag_id)
    )
    return dict(rows.all())


def running_run_counts(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(DagRun.dag_id, func.count())
        .where(DagRun.state == DagRunState.RUNNING.value)
        .group_by(DagRun.dag_id)
    )
    return dict(rows.all())


def last_scheduled_interval_ends(session: Session, dag_ids: Sequence[str]) -> dict[str, datetime]:
    """dag_id -> end of the data interval of its latest scheduled run."""
    if not dag_ids:
        return {}
    rows = session.execute(
        select(DagRun.dag_id, func.max(DagRun.data_interval_end))
        .where(DagRun.dag_id.in_(list(dag_ids)), DagRun.run_type == "scheduled")
        .group_by(DagRun.dag_id)
    )
    return {dag_id: end for dag_id, end in rows if end is not None}


def runs_in_state(session: Session, state: DagRunState) -> list[DagRun]:
    return list(session.execute(_runs_in_state(state.value)).scalars())


# The statements every tick runs unchanged are built once: a statement is immutable, and
# the one object keeps its cache key, so the tick neither builds nor keys them again.


@cache
def _runs_in_state(state: str) -> Select[Any]:
    return select(DagRun).where(DagRun.state == state).order_by(DagRun.logical_date)


def previous_run_ids(session: Session, runs: Sequence[DagRun]) -> dict[int, str | None]:
    """dag_run.id -> run_id of the same DAG's run just before it (for depends_on_past), in
    one query per 500 runs: a correlated subquery on the (dag_id, logical_date) key."""
    ids = sorted({run.id for run in runs})
    before = aliased(DagRun)
    previous = (
        select(before.run_id)
        .where(before.dag_id == DagRun.dag_id, before.logical_date < DagRun.logical_date)
        .order_by(before.logical_date.desc())
        .limit(1)
        .correlate(DagRun)
        .scalar_subquery()
    )
    found: dict[int, str | None] = {}
    for batch in _batches(ids):
        rows = session.execute(select(DagRun.id, previous).where(DagRun.id.in_(batch)))
        found.update(dict(rows.all()))
    return found


# -- task instances -------------------------------------------------------------------


def pairs_in(
    first: Any, second: Any, keys: Iterable[tuple[str, str | None]]
) -> ColumnElement[bool]:
    """`(first, second) IN keys`, written as `first = :a AND second IN (...)` per first value.

    SQLite plans a row-value IN over two or more pairs as a full table scan; this form
    uses a (first, second, ...) index on SQLite and PostgreSQL alike.
    """
    by_first: dict[str, list[str | None]] = defaultdict(list)
    for a, b in keys:
        by_first[a].append(b)
    return or_(*(and_(first == a, second.in_(bs)) for a, bs in sorted(by_first.items())))


def task_instances_of_runs(
    session: Session, run_keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], list[TiRow]]:
    """(dag_id, run_id) -> its task instances, in one query per 500 runs."""
    keys = list(set(run_keys))
    found: dict[tuple[str, str], list[TiRow]] = defaultdict(list)
    for chunk in _batches(keys):
        rows = session.execute(
            select(*_TI_COLUMNS).where(pairs_in(TaskInstance.dag_id, TaskInstance.run_id, chunk))
        )
        for row in _ti_rows(rows):
            found[(row.dag_id, row.run_id)].append(row)
    return found


def task_instances_of_run_tasks(
    session: Session, wanted: Mapping[tuple[str, str], Iterable[str]]
) -> dict[tuple[str, str], list[TiRow]]:
    """(dag_id, run_id) -> the task instances of the given task ids in that run (those a
    decision reads). Runs that want the same task ids share a query, so many runs at the
    same point of one DAG cost one query per 500 runs, not one each."""
    by_tasks: dict[frozenset[str], list[tuple[str, str]]] = defaultdict(list)
    for key, task_ids in wanted.items():
        by_tasks[frozenset(task_ids)].append(key)
    found: dict[tuple[str, str], list[TiRow]] = {key: [] for key in wanted}
    for task_ids, keys in by_tasks.items():
        for run_batch in _batches(sorted(keys)):
            for task_batch in _batches(sorted(task_ids)):
                rows = session.execute(
                    select(*_TI_COLUMNS).where(
                        pairs_in(TaskInstance.dag_id, TaskInstance.run_id, run_batch),
                        TaskInstance.task_id.in_(task_batch),
                    )
                )
                for row in _ti_rows(rows):
                    found[(row.dag_id, row.run_id)].append(row)
    return found


def task_ids_in_states(
    session: Session, run_keys: Iterable[tuple[str, str]], states: Iterable[TaskState]
) -> dict[tuple[str, str], set[str]]:
    """(dag_id, run_id) -> ids of its tasks in `states` (`ix_task_instance_run_state`)."""
    keys = list(set(run_keys))
    values = [TaskState(state).value for state in states]
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for batch in _batches(keys):
        rows = session.execute(
            select(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id).where(
                pairs_in(TaskInstance.dag_id, TaskInstance.run_id, batch),
                TaskInstance.state.in_(values),
            )
        )
        for dag_id, run_id, task_id in rows:
            found[(dag_id, run_id)].add(task_id)
    return found


def runs_with_unfinished_tasks(
    session: Session, run_keys: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """The runs among `run_keys` that still have a task instance to finish; each run's
    check stops at its first such row (`ix_task_instance_run_state`)."""
    keys = list(set(run_keys))
    unfinished = [state.value for state in TASK_UNFINISHED]
    found: set[tuple[str, str]] = set()
    for batch in _batches(keys):
        pending = (
            select(TaskInstance.id)
            .where(
                TaskInstance.dag_id == DagRun.dag_id,
                TaskInstance.run_id == DagRun.run_id,
                TaskInstance.state.in_(unfinished),
            )
            .exists()
        )
        rows = session.execute(
            select(DagRun.dag_id, DagRun.run_id).where(
                pairs_in(DagRun.dag_id, DagRun.run_id, batch), pending
            )
        )
        found.update((dag_id, run_id) for dag_id, run_id in rows)
    return found


def first_task_starts(
    session: Session, run_keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], datetime]:
    """(dag_id, run_id) -> when its first task instance started, in one query per 500 runs."""
    keys = list(set(run_keys))
    found: dict[tuple[str, str], datetime] = {}
    for chunk in _batches(keys):
        rows = session.execute(
            select(TaskInstance.dag_id, TaskInstance.run_id, func.min(TaskInstance.start_date))
            .where(pairs_in(TaskInstance.dag_id, TaskInstance.run_id, chunk))
            .group_by(TaskInstance.dag_id, TaskInstance.run_id)
        )
        found.update({(dag_id, run_id): at for dag_id, run_id, at in rows if at is not None})
    return found


def task_states_of_runs(
    session: Session, run_keys: Iterable[tuple[str, str]], task_ids: Iterable[str]
) -> dict[tuple[str, str], dict[str, TaskState]]:
    """(dag_id, run_id) -> task_id -> state, for a few tasks (depends_on_past)."""
    keys, ids = list(set(run_keys)), list(set(task_ids))
    if not keys or not ids:
        return {}
    rows = session.execute(
        select(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id, TaskInstance.state)
        .where(pairs_in(TaskInstance.dag_id, TaskInstance.run_id, keys))
        .where(TaskInstance.task_id.in_(ids))
    )
    seen: dict[tuple[str, str, str], list[TaskState]] = defaultdict(list)
    for dag_id, run_id, task_id, state in rows:
        seen[(dag_id, run_id, task_id)].append(TaskState(state))
    found: dict[tuple[str, str], dict[str, TaskState]] = defaultdict(dict)
    for (dag_id, run_id, task_id), states in seen.items():
        # a mapped task's instances (and its removed placeholder) speak as one
        found[(dag_id, run_id)][task_id] = states[0] if len(states) == 1 else combined_state(states)
    return found


def pushed_values(
    session: Session, wanted: Iterable[tuple[str, str, str, str]]
) -> dict[tuple[str, str, str, str], Any]:
    """(dag_id, run_id, task_id, key) -> the XCom an unmapped task pushed, for the inputs
    of mapped tasks being expanded; one query per 500 runs."""
    by_run: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for dag_id, run_id, task_id, key in wanted:
        by_run[(dag_id, run_id)].add((task_id, key))
    if not by_run:
        return {}
    task_ids = {task_id for pairs in by_run.values() for task_id, _ in pairs}
    found: dict[tuple[str, str, str, str], Any] = {}
    for batch in _batches(list(by_run)):
        rows = session.execute(
            select(XCom.dag_id, XCom.run_id, XCom.task_id, XCom.key, XCom.value).where(
                pairs_in(XCom.dag_id, XCom.run_id, batch),
                XCom.task_id.in_(sorted(task_ids)),
                XCom.map_index == -1,
            )
        )
        for dag_id, run_id, task_id, key, value in rows:
            if (task_id, key) in by_run[(dag_id, run_id)]:
                found[(dag_id, run_id, task_id, key)] = value
    return found


def add_map_indexes(session: Session, placeholder_id: int, indexes: Iterable[int]) -> None:
    """New task instances of a mapped task, in state none, copied from its placeholder."""
    row = session.get(TaskInstance, placeholder_id)
    if row is None:
        return
    copied = {
        name: getattr(row, name)
        for name in (
            "dag_id", "run_id", "task_id", "max_tries", "operator", "pool", "pool_slots",
            "priority_weight", "queue",
        )
    }  # fmt: skip
    rows = [
        {**copied, "map_index": i, "state": TaskState.NONE.value, "try_number": 0} for i in indexes
    ]
    if rows:
        session.execute(insert(TaskInstance), rows)


def set_map_index(session: Session, ti_id: int, map_index: int) -> None:
    """The placeholder of a mapped task becomes its first instance (index 0)."""
    session.execute(
        update(TaskInstance).where(TaskInstance.id == ti_id).values(map_index=map_index)
    )


def scheduled_candidates(session: Session, limit: int, *, lock: bool = False) -> list[TiRow]:
    """Scheduled task instances of unpaused DAGs, highest priority first. `lock`: the rows
    are locked for this transaction and rows another transaction holds are passed by
    (PostgreSQL), so two schedulers never pick the same task instance."""
    query = (
        select(*_TI_COLUMNS)
        .join(Dag, Dag.dag_id == TaskInstance.dag_id)
        .where(TaskInstance.state == TaskState.SCHEDULED.value, Dag.is_paused.is_(False))
        .order_by(TaskInstance.priority_weight.desc(), TaskInstance.scheduled_at, TaskInstance.id)
        .limit(limit)
    )
    if lock:
        query = skip_locked(query, session, TaskInstance)
    return _ti_rows(session.execute(query))


def lock_running_runs(session: Session, run_ids: Sequence[int]) -> set[int]:
    """Lock the given runs that are still running for this transaction, passing by those
    another scheduler is deciding (PostgreSQL; on SQLite every running one is returned)."""
    locked: set[int] = set()
    for batch in _batches(sorted(run_ids)):
        query = select(DagRun.id).where(
            DagRun.id.in_(batch), DagRun.state == DagRunState.RUNNING.value
        )
        locked.update(session.execute(skip_locked(query, session)).scalars())
    return locked


def adoptable_queued(session: Session, *, include_unowned: bool = False) -> list[TiRow]:
    """Task instances queued by a scheduler job that is no longer running: its executor
    (and the attempts it held but had not started) went with it. With `include_unowned`,
    also those no scheduler job owns (queued before owners were recorded). Locked for this
    transaction; rows another scheduler is adopting are passed by
    (`ix_task_instance_state_queued_by`)."""
    running_jobs = select(Job.id).where(Job.state == "running")
    owner_gone: ColumnElement[bool] = TaskInstance.queued_by_job_id.not_in(running_jobs)
    if include_unowned:
        owner_gone = TaskInstance.queued_by_job_id.is_(None) | owner_gone
    else:
        owner_gone = TaskInstance.queued_by_job_id.is_not(None) & owner_gone
    query = (
        select(*_TI_COLUMNS)
        .where(TaskInstance.state == TaskState.QUEUED.value, owner_gone)
        .order_by(TaskInstance.id)
    )
    return _ti_rows(session.execute(skip_locked(query, session)))


def tis_in_state(session: Session, state: TaskState) -> list[TiRow]:
    rows = session.execute(select(*_TI_COLUMNS).where(TaskInstance.state == state.value))
    return _ti_rows(rows)


def stale_running(session: Session, cutoff: datetime) -> list[TiRow]:
    """Running task instances whose last heartbeat is older than `cutoff`, locked for this
    transaction (PostgreSQL: rows another scheduler is failing are passed by)."""
    query = (
        select(*_TI_COLUMNS)
        .where(
            TaskInstance.state == TaskState.RUNNING.value,
            (TaskInstance.last_heartbeat.is_(None)) | (TaskInstance.last_heartbeat < cutoff),
        )
        .order_by(TaskInstance.id)
    )
    return _ti_rows(session.execute(skip_locked(query, session)))


@dataclass
class Occupancy:
    """Slots held by queued and running attempts, counted once per tick."""

    pool_used: dict[str, int]
    pool_running: dict[str, int]
    pool_queued: dict[str, int]
    dag_active: dict[str, int]
    task_active: dict[tuple[str, str], int]
    total: int
    queued: int = 0  #: task instances queued
    running: int = 0  #: task instances running
    #: (dag_id, run_id, task_id) -> queued or running (max_active_tis_per_dagrun)
    run_task_active: dict[tuple[str, str, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )


def occupancy(session: Session) -> Occupancy:
    """What queued and running task instances hold, in one GROUP BY."""
    rows = session.execute(_occupancy())
    result = Occupancy(
        defaultdict(int), defaultdict(int), defaultdict(int), defaultdict(int), defaultdict(int), 0
    )
    for dag_id, run_id, task_id, pool, state, count, slots in rows:
        result.pool_used[pool] += int(slots or 0)
        if state == TaskState.RUNNING.value:
            result.pool_running[pool] += int(slots or 0)
            result.running += count
        else:
            result.pool_queued[pool] += int(slots or 0)
            result.queued += count
        result.dag_active[dag_id] += count
        result.task_active[(dag_id, task_id)] += count
        result.run_task_active[(dag_id, run_id, task_id)] += count
        result.total += count
    return result


@cache
def _occupancy() -> Select[str, str, str, str, str, int, int]:
    return (
        select(
            TaskInstance.dag_id,
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.pool,
            TaskInstance.state,
            func.count(),
            func.sum(TaskInstance.pool_slots),
        )
        .where(TaskInstance.state.in_([TaskState.QUEUED.value, TaskState.RUNNING.value]))
        .group_by(
            TaskInstance.dag_id,
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.pool,
            TaskInstance.state,
        )
    )


def pool_sizes(session: Session) -> dict[str, int]:
    return dict(session.execute(_pool_sizes()).all())


@cache
def _pool_sizes() -> Select[str, int]:
    return select(Pool.name, Pool.slots)


def close_open_tries(
    session: Session,
    ti_ids: Sequence[int],
    *,
    now: datetime,
    error: str,
    state: TaskState | None = None,
) -> None:
    """End the open try of each task instance (one at most): an attempt that ended
    without its runner (zombie, lost process), or a sensor waiting between pokes
    (reschedule mode) that is cleared or stopped, so its next attempt starts a new try.
    `state` None keeps the try's state (up_for_reschedule)."""
    values: dict[str, Any] = {
        "end_date": now,
        "error": error,
        "error_signature": error_signature.signature(masking.redact(error)),
    }
    if state is not None:
        values["state"] = state.value
    for batch in _batches(list(ti_ids)):
        session.execute(
            update(TaskTry)
            .where(TaskTry.ti_id.in_(batch), TaskTry.end_date.is_(None))
            .values(**values)
        )


def set_next_dagrun(
    session: Session,
    dag_id: str,
    *,
    interval_start: datetime | None,
    interval_end: datetime | None,
    create_after: datetime,
) -> None:
    session.execute(
        update(Dag)
        .where(Dag.dag_id == dag_id)
        .values(
            next_dagrun=interval_start,
            next_dagrun_data_interval_start=interval_start,
            next_dagrun_data_interval_end=interval_end,
            next_dagrun_create_after=create_after,
        )
    )


# -- jobs -----------------------------------------------------------------------------


def start_job(session: Session, job_type: str, pid: int, now: datetime) -> int:
    job = Job(
        job_type=job_type,
        state="running",
        hostname=socket.getfqdn(),
        pid=pid,
        start_date=now,
        latest_heartbeat=now,
    )
    session.add(job)
    session.flush()
    return job.id


def heartbeat_job(
    session: Session, job_id: int, now: datetime, **stats: float | int | None
) -> None:
    """Beat, with the job's latest figures (last_loop_seconds, slots_used, slots_open). A
    job another scheduler marked failed while it was only slow says it runs again."""
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(latest_heartbeat=now, state="running", end_date=None, **stats)
    )


def end_job(session: Session, job_id: int, state: str, now: datetime) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(state=state, end_date=now))


def fail_stale_jobs(
    session: Session, job_type: str, cutoff: datetime, now: datetime
) -> list[tuple[int, str, int]]:
    """Jobs of a crashed process still say running; mark them failed. Returns the (id,
    hostname, pid) of those this call failed (rows another process is failing are passed
    by on PostgreSQL, so each dead job is reported once) (`ix_job_job_type_state`)."""
    query = select(Job.id, Job.hostname, Job.pid).where(
        Job.job_type == job_type, Job.state == "running", Job.latest_heartbeat < cutoff
    )
    stale = [
        (job_id, host, pid) for job_id, host, pid in session.execute(skip_locked(query, session))
    ]
    if stale:
        session.execute(
            update(Job)
            .where(Job.id.in_([job_id for job_id, _, _ in stale]))
            .values(state="failed", end_date=now)
        )
    return stale


def scheduler_job(session: Session, own: int | None) -> Job | None:
    """Job `own`, else the running scheduler job with the latest heartbeat
    (`ix_job_job_type_state`)."""
    if own is not None:
        return session.get(Job, own)
    query = (
        select(Job)
        .where(Job.job_type == "scheduler", Job.state == "running")
        .order_by(Job.latest_heartbeat.desc())
        .limit(1)
    )
    return session.execute(query).scalar_one_or_none()
