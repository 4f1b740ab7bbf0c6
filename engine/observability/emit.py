"""The engine's emission points, each a named function so the call sites stay one line.

They go through `metrics.stats`, whatever this process installed: the scheduler's own
backends, or in an attempt process the relay that carries values back to the scheduler.
Durations are seconds; labels come only from the catalog's bounded set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.observability.labels import file_label, folder_forms
from engine.states import TaskState
from metrics import Sample, stats
from metrics.gauges import GaugeSet

_FAILED = frozenset({TaskState.FAILED, TaskState.UP_FOR_RETRY})


def _task_tags(dag_id: str, task_id: str) -> dict[str, str]:
    return {"dag_id": dag_id, "task_id": task_id}


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return (later - earlier).total_seconds()


# -- task attempts ---------------------------------------------------------------------


def attempt_started(ti: Any, now: datetime) -> None:
    """queued → running: the start, the queue delay and the time it waited to be queued."""
    tags = _task_tags(ti.dag_id, ti.task_id)
    stats.incr("ti.start", tags=tags)
    queued = _seconds(now, ti.queued_at)
    if queued is not None:
        # per pool too: a pool too small for its tasks shows as queue delay there
        pool_tags = {**tags, "pool": ti.pool}
        stats.timing("task.queued_duration", queued, tags=pool_tags)
    scheduled = _seconds(ti.queued_at, ti.scheduled_at)
    if scheduled is not None:
        stats.timing("task.scheduled_duration", scheduled, tags=tags)


def attempt_finished(
    dag_id: str,
    task_id: str,
    operator: str | None,
    state: TaskState,
    duration: float | None,
    *,
    timed_out: bool = False,
    zombie: bool = False,
) -> None:
    """An attempt's outcome, whoever recorded it (the runner, or the scheduler for a lost one).

    A sensor's poke that is rescheduled counts as a finish (state up_for_reschedule, as
    in Airflow) but is not timed: its try is, once, when it ends.
    """
    tags = _task_tags(dag_id, task_id)
    stats.incr("ti.finish", tags={**tags, "state": state.value})
    if duration is not None and state is not TaskState.UP_FOR_RESCHEDULE:
        stats.timing("task.duration", duration, tags=tags)
    op_tags = {"operator": operator or "unknown"}
    if state is TaskState.SUCCESS:
        stats.incr("ti_successes", tags=tags)
        stats.incr("operator_successes", tags=op_tags)
    elif state in _FAILED:
        stats.incr("ti_failures", tags=tags)
        stats.incr("operator_failures", tags=op_tags)
    if state is TaskState.UP_FOR_RETRY:
        stats.incr("ti.retries", tags=tags)
    if timed_out:
        stats.incr("ti.timeouts", tags=tags)
    if zombie:
        stats.incr("task_instances_without_heartbeats_killed", tags=tags)


def callback_ran(dag_id: str, kind: str, failed: bool, *, dag_level: bool) -> None:
    """One callback call; DAG-level failures also count as Airflow's callback_exceptions."""
    status = "failed" if failed else "success"
    stats.incr("callback.outcome", tags={"dag_id": dag_id, "callback": kind, "status": status})
    if failed and dag_level:
        stats.incr("dag.callback_exceptions", tags={"dag_id": dag_id})


# -- DAG runs --------------------------------------------------------------------------


def run_started(run: Any, now: datetime) -> None:
    """A scheduled run's lateness: from the end of its data interval to its start."""
    if run.run_type != "scheduled":
        return
    delay = _seconds(now, run.data_interval_end)
    if delay is not None:
        stats.timing("dagrun.schedule_delay", max(delay, 0.0), tags={"dag_id": run.dag_id})


def run_finished(run: Any, state: str, now: datetime, first_task_start: datetime | None) -> None:
    """A run's duration by outcome, and (scheduled runs) how late its first task started."""
    tags = {"dag_id": run.dag_id}
    duration = _seconds(now, run.start_date)
    if duration is not None and state in ("success", "failed"):
        stats.timing(f"dagrun.duration.{state}", duration, tags=tags)
    if run.run_type == "scheduled":
        delay = _seconds(first_task_start, run.data_interval_end)
        if delay is not None:
            stats.timing("dagrun.first_task_scheduling_delay", max(delay, 0.0), tags=tags)


def dependency_check(dag_id: str, seconds: float) -> None:
    stats.timing("dagrun.dependency-check", seconds, tags={"dag_id": dag_id})


# -- the scheduler loop ----------------------------------------------------------------


def tick(report: Any) -> None:
    """Every tick: its duration (a histogram, so rates and quantiles come for free)."""
    stats.timing("scheduler.scheduler_loop_duration", report.duration)


def heartbeat() -> None:
    stats.incr("scheduler_heartbeat")


#: Gauges of the metastore the loop sends itself, fresher than a read of the metastore;
#: the metastore pusher leaves them out so each name has one source.
LOOP_GAUGES = frozenset({"pool.open_slots", "pool.starving_tasks", "scheduler.dagruns.running"})


class LoopGauges:
    """The per-loop counts, one whole set per call, so a deleted pool's series is zeroed
    once and then forgotten; the scheduler sends them at most once a second."""

    def __init__(self) -> None:
        self.gauges = GaugeSet(stats)

    def send(self, report: Any, executor: Any) -> None:
        samples = [
            Sample("scheduler.tasks.executable", report.executable),
            Sample("scheduler.tasks.starving", sum(report.starving.values())),
            Sample("scheduler.dagruns.running", report.running_runs),
            Sample("executor.open_slots", executor.open_slots),
            Sample("executor.running_tasks", report.running_tis),
            Sample("executor.queued_tasks", report.queued_tis),
        ]
        for pool, open_slots in report.open_slots_by_pool.items():
            tags = {"pool": pool}
            samples.append(Sample("pool.open_slots", open_slots, tags))
            samples.append(Sample("pool.starving_tasks", report.starving.get(pool, 0), tags))
        self.gauges.send(samples)


def orphans_cleared(count: int) -> None:
    if count:
        stats.incr("scheduler.orphaned_tasks.cleared", count)


def orphans_adopted(count: int) -> None:
    if count:
        stats.incr("scheduler.orphaned_tasks.adopted", count)


def schedulers_lost(count: int) -> None:
    if count:
        stats.incr("scheduler.schedulers_lost", count)


# -- DAG parsing -----------------------------------------------------------------------


def parse_pass(
    total_seconds: float,
    files: Iterable[Any],
    folders: Sequence[Path],
    durations: Mapping[str, float],
) -> None:
    """One pass of the DAG processor: its total, each file's last import duration and this
    pass's timeouts. Every file known after the pass gets its duration, imported in this
    pass or unchanged since an earlier one (read from the metastore, not re-imported):
    one value per file per pass, as Airflow sends. The DAG count and import errors are
    the metastore's gauges (`collector`), whichever process parsed."""
    stats.gauge("dag_processing.total_parse_time", total_seconds)
    forms = folder_forms(folders)
    for fileloc, seconds in sorted(durations.items()):
        tags = {"file": file_label(fileloc, forms)}
        stats.timing("dag_processing.last_duration", seconds, tags=tags)
    for result in files:
        if result.timed_out:
            tags = {"file": file_label(result.fileloc, forms)}
            stats.incr("dag_processing.processor_timeouts", tags=tags)
