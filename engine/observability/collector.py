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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from engine.observability.labels import file_label, folder_forms
from engine.states import TaskState
from engine.store import gauges
from engine.store.gauges import Snapshot
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
            snapshot = gauges.read_snapshot(session, list(_TI_GAUGES))
        return _samples(snapshot, clock(), lambda path: file_label(path, folders))

    return read_metastore


def _samples(snapshot: Snapshot, now: datetime, label_of: Callable[[str], str]) -> list[Sample]:
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


def _pool_samples(snapshot: Snapshot) -> Iterable[Sample]:
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


def _ti_samples(snapshot: Snapshot) -> Iterable[Sample]:
    per_task: Counter[tuple[str, str, str, str]] = Counter()
    for (queue, dag_id, task_id, _, _, state), count in snapshot.tis.items():
        per_task[(_TI_GAUGES[state], queue, dag_id, task_id)] += count
    for (name, queue, dag_id, task_id), count in sorted(per_task.items()):
        yield Sample(name, count, {"queue": queue, "dag_id": dag_id, "task_id": task_id})


def _file_samples(
    snapshot: Snapshot, now: datetime, label_of: Callable[[str], str]
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
