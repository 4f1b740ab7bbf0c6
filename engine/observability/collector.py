"""The metastore as a Prometheus source: gauges read at scrape time, not pushed.

`metastore_source(store, config)` returns the callable that
`metrics.prometheus.PrometheusBackend.add_source` reads at every scrape of `/metrics`.
Reading the metastore makes these gauges true however many schedulers, workers or CLI
commands changed it, and a sourced metric hides pushed values of the same name, so the
metastore is the one truth for them. A scrape costs seven aggregated statements in one
read-only session, whatever the number of task instances (never a query per row).

What is counted, and the choices behind it:
- pools: every row of the pool table, empty pools too. Occupancy is the scheduler's
  (`engine.store.scheduling.occupancy`, `engine.scheduling.limits`): queued and running task
  instances hold their `pool_slots`; open = slots - held (negative when a pool was
  shrunk below its use). Task instances naming a pool that does not exist are not shown.
- `pool.starving_tasks`: scheduled task instances whose `pool_slots` exceed the pool's
  open slots right now, the test Airflow applies per candidate. Candidates that each fit
  alone but compete for the last open slots are not counted.
- `ti.scheduled|queued|running|up_for_reschedule`: per (queue, dag_id, task_id) that has
  any; mapped instances count under their task. up_for_reschedule (sensors in reschedule
  mode between pokes) holds no pool slot, so it shows who waits without starving a pool.
- `task_instances`: per state, the task instances of active (queued or running) DAG
  runs, so the gauge follows current work instead of growing with history; every state
  is shown, 0 included.
- `dagrun.queued_age`: per DAG with a queued run, seconds since its oldest queued run
  was queued (its logical date if it has no queued_at): a run that does not start.
- `dag_processing.last_run.seconds_ago`: seconds since the file was last imported. The
  processor skips unchanged files, so for a file nobody edits this keeps growing; the
  `dag_processor` health check is the liveness signal (`engine.observability.health`).
- `file` labels: the path relative to `core.dags_folder` when inside it, else the
  basename; two files with one label keep the larger age (the backend would add them).
- A series this source stops returning (a task with nothing running any more, a deleted
  file) is absent from the next scrape; the pusher that sends these samples to StatsD
  and OpenTelemetry zeroes it once or drops it, by the catalog's `when_gone` rule.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from engine.observability.labels import file_label, folder_forms
from engine.states import DAG_RUN_ACTIVE, DagRunState, TaskState
from engine.store.models import Dag, DagFile, DagRun, ImportError_, TaskInstance
from engine.store.scheduling import pool_sizes
from metrics import Sample

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.db import Store

Clock = Callable[[], datetime]
#: Task states shown per (queue, dag_id, task_id); queued and running hold pool slots.
_TI_GAUGES = {
    TaskState.SCHEDULED.value: "ti.scheduled",
    TaskState.QUEUED.value: "ti.queued",
    TaskState.RUNNING.value: "ti.running",
    TaskState.UP_FOR_RESCHEDULE.value: "ti.up_for_reschedule",
}
_HOLDING = frozenset({TaskState.QUEUED.value, TaskState.RUNNING.value})


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Snapshot:
    """What one scrape read from the metastore, before it becomes samples."""

    #: pool -> slots, every row of the pool table
    pools: dict[str, int]
    #: (queue, dag_id, task_id, pool, pool_slots, state) -> task instances, for the
    #: scheduled, queued, running and up_for_reschedule states
    tis: dict[tuple[str, str, str, str, int, str], int]
    #: state -> task instances of queued or running DAG runs
    active_states: dict[str, int]
    running_runs: int
    #: dag_id -> when its oldest queued (not yet started) run was queued
    queued_runs: dict[str, datetime]
    active_dags: int
    import_error_files: list[str]
    #: fileloc -> when its content was last imported
    parsed_files: dict[str, datetime]


def metastore_source(
    store: Store, config: Config, clock: Clock = utcnow
) -> Callable[[], list[Sample]]:
    """The source to hand to `PrometheusBackend.add_source`: reads the metastore per scrape.

    A database error propagates: the backend then drops this source's samples from that
    scrape (logged once) rather than showing stale values.
    """
    dags_folder = Path(config["core.dags_folder"]).expanduser()
    folders = folder_forms([dags_folder])

    def read_metastore() -> list[Sample]:
        with store.session(readonly=True) as session:
            snapshot = _read_snapshot(session)
        return _samples(snapshot, clock(), lambda path: file_label(path, folders))

    return read_metastore


def _read_snapshot(session: Session) -> _Snapshot:
    """Everything the gauges need, in seven aggregated statements."""
    ti_rows = session.execute(
        select(
            TaskInstance.queue,
            TaskInstance.dag_id,
            TaskInstance.task_id,
            TaskInstance.pool,
            TaskInstance.pool_slots,
            TaskInstance.state,
            func.count(),
        )
        .where(TaskInstance.state.in_(list(_TI_GAUGES)))
        .group_by(
            TaskInstance.queue,
            TaskInstance.dag_id,
            TaskInstance.task_id,
            TaskInstance.pool,
            TaskInstance.pool_slots,
            TaskInstance.state,
        )
    )
    tis = {(q, d, t, p, int(slots or 0), s): int(n) for q, d, t, p, slots, s, n in ti_rows}
    active_states = session.execute(
        select(TaskInstance.state, func.count())
        .join(
            DagRun,
            and_(DagRun.dag_id == TaskInstance.dag_id, DagRun.run_id == TaskInstance.run_id),
        )
        .where(DagRun.state.in_([state.value for state in DAG_RUN_ACTIVE]))
        .group_by(TaskInstance.state)
    )
    running_runs = (
        select(func.count())
        .select_from(DagRun)
        .where(DagRun.state == DagRunState.RUNNING.value)
        .scalar_subquery()
    )
    active_dags = select(func.count()).select_from(Dag).where(Dag.is_active).scalar_subquery()
    counts = session.execute(select(running_runs, active_dags)).one()
    queued_since = func.min(func.coalesce(DagRun.queued_at, DagRun.logical_date))
    queued_runs = session.execute(
        select(DagRun.dag_id, queued_since)
        .where(DagRun.state == DagRunState.QUEUED.value)
        .group_by(DagRun.dag_id)
    )
    return _Snapshot(
        pools=pool_sizes(session),
        tis=tis,
        active_states={state: int(n) for state, n in active_states},
        running_runs=int(counts[0]),
        queued_runs={dag_id: since for dag_id, since in queued_runs if since is not None},
        active_dags=int(counts[1]),
        import_error_files=list(session.execute(select(ImportError_.filename)).scalars()),
        parsed_files=dict(session.execute(select(DagFile.fileloc, DagFile.last_parsed)).all()),
    )


def _samples(snapshot: _Snapshot, now: datetime, label_of: Callable[[str], str]) -> list[Sample]:
    """The samples of one snapshot; `label_of` turns a file path into its `file` label."""
    samples = [*_pool_samples(snapshot), *_ti_samples(snapshot)]
    for state in TaskState:
        samples.append(
            Sample("task_instances", snapshot.active_states.get(state, 0), {"state": state.value})
        )
    samples.append(Sample("scheduler.dagruns.running", snapshot.running_runs))
    samples.append(Sample("dagbag_size", snapshot.active_dags))
    for dag_id, since in sorted(snapshot.queued_runs.items()):
        age = max(0.0, (now - since).total_seconds())
        samples.append(Sample("dagrun.queued_age", age, {"dag_id": dag_id}))
    samples.extend(_file_samples(snapshot, now, label_of))
    return samples


def _pool_samples(snapshot: _Snapshot) -> Iterable[Sample]:
    slots_by_state: dict[str, Counter[str]] = defaultdict(Counter)
    #: pool -> pool_slots -> scheduled task instances asking for that many
    wanted: dict[str, Counter[int]] = defaultdict(Counter)
    for (_, _, _, pool, pool_slots, state), count in snapshot.tis.items():
        slots_by_state[state][pool] += pool_slots * count
        if state == TaskState.SCHEDULED:
            wanted[pool][pool_slots] += count
    for pool, slots in sorted(snapshot.pools.items()):
        held = sum(slots_by_state[state][pool] for state in _HOLDING)
        open_slots = slots - held
        starving = sum(n for size, n in wanted[pool].items() if size > open_slots)
        labels = {"pool": pool}
        yield Sample("pool.open_slots", open_slots, labels)
        yield Sample("pool.queued_slots", slots_by_state[TaskState.QUEUED][pool], labels)
        yield Sample("pool.running_slots", slots_by_state[TaskState.RUNNING][pool], labels)
        yield Sample("pool.scheduled_slots", slots_by_state[TaskState.SCHEDULED][pool], labels)
        yield Sample("pool.starving_tasks", starving, labels)


def _ti_samples(snapshot: _Snapshot) -> Iterable[Sample]:
    per_task: Counter[tuple[str, str, str, str]] = Counter()
    for (queue, dag_id, task_id, _, _, state), count in snapshot.tis.items():
        per_task[(_TI_GAUGES[state], queue, dag_id, task_id)] += count
    for (name, queue, dag_id, task_id), count in sorted(per_task.items()):
        yield Sample(name, count, {"queue": queue, "dag_id": dag_id, "task_id": task_id})


def _file_samples(
    snapshot: _Snapshot, now: datetime, label_of: Callable[[str], str]
) -> Iterable[Sample]:
    broken = sorted({label_of(path) for path in snapshot.import_error_files})
    yield Sample("dag_processing.import_errors", len(snapshot.import_error_files))
    for label in broken:
        yield Sample("import_errors", 1, {"file": label})
    ages: dict[str, float] = {}
    for path, last_parsed in snapshot.parsed_files.items():
        label = label_of(path)
        age = max(0.0, (now - last_parsed).total_seconds())
        ages[label] = max(age, ages.get(label, 0.0))
    for label, age in sorted(ages.items()):
        yield Sample("dag_processing.last_run.seconds_ago", age, {"file": label})
