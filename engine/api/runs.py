"""Runs: trigger, pause, backfill, and the reads the CLI and console list them with."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine.api.clearing import clear_rows, load_plan, utc_now
from engine.exceptions import DagwatchError
from engine.sdk.params import ParamsDict
from engine.sdk.schedules import DataInterval, Timetable, coerce_utc, localize
from engine.states import DagRunState
from engine.store import dags, runs
from engine.store.audit import record_audit
from engine.store.db import Store
from engine.store.models import ID_LEN, Dag, DagRun
from engine.store.wakeup import notify_scheduler

#: A backfill longer than this is refused: it is almost always a mistaken range or schedule.
MAX_BACKFILL_RUNS = 10_000
#: The columns `task_states` reports for each task instance.
_TASK_STATE_KEYS = (
    "dag_id",
    "run_id",
    "task_id",
    "map_index",
    "state",
    "try_number",
    "max_tries",
    "start_date",
    "end_date",
    "duration",
    "pool",
    "queue",
    "priority_weight",
    "hostname",
)


def _refuse_duplicate(session: Session, dag_id: str, run_id: str, logical_date: datetime) -> None:
    """Refuse a second run with this run_id or at this logical date (both are unique)."""
    clashes = runs.runs_with_id_or_date(session, dag_id, run_id, logical_date)
    for clash in clashes:
        if clash.logical_date == logical_date:  # the likelier mistake; the default id follows it
            raise DagwatchError(
                f"DAG {dag_id!r} already has a run at {logical_date.isoformat()} "
                f"({clash.run_id!r}); pick another logical date"
            )
    if clashes:
        raise DagwatchError(f"DAG {dag_id!r} already has a run {run_id!r}; pick another run id")


def trigger_dag(
    store: Store,
    dag_id: str,
    *,
    conf: Mapping[str, Any] | None = None,
    logical_date: datetime | None = None,
    run_id: str | None = None,
    actor: str = "cli",
    now: datetime | None = None,
) -> DagRun:
    """Create a QUEUED manual run; the scheduler starts it within max_active_runs.

    The conf is validated against the DAG's params first, so a bad conf writes nothing.
    A paused DAG may be triggered: as in Airflow 2, its run stays queued until the DAG
    is unpaused. A naive `logical_date` is UTC.
    """
    now = utc_now(now)
    when = coerce_utc(logical_date) if logical_date is not None else now
    run_id = run_id if run_id is not None else f"manual__{when.isoformat()}"
    if not run_id.strip() or len(run_id) > ID_LEN:
        raise DagwatchError(f"run id {run_id!r} must be 1 to {ID_LEN} characters")
    try:
        with store.session() as session:
            row = dags.get_dag(session, dag_id)
            # the two parts of the serialized DAG a trigger uses, decoded as SerializedDAG
            # decodes them, without rebuilding its tasks (the CLI answers sooner)
            timetable = Timetable.deserialize(row.serialized["schedule"])
            ParamsDict.load(row.serialized.get("params") or {}).resolve(conf)
            _refuse_duplicate(session, dag_id, run_id, when)
            interval = timetable.infer_manual_data_interval(when)
            run = runs.create_dag_run(
                session,
                row.serialized,
                run_id=run_id,
                run_type="manual",
                logical_date=when,
                data_interval=(interval.start, interval.end),
                conf=conf,
                state=DagRunState.QUEUED,
                now=now,
                dag_hash=row.dag_hash,
            )
            record_audit(
                session,
                actor=actor,
                event="dags.trigger",
                dag_id=dag_id,
                run_id=run_id,
                extra={"logical_date": when.isoformat(), "conf_keys": sorted(conf or {})},
                at=now,
            )
            notify_scheduler(session)
    except IntegrityError:  # another writer created the same run meanwhile
        raise DagwatchError(
            f"DAG {dag_id!r} already has a run {run_id!r} or a run at {when.isoformat()}"
        ) from None
    return run


def set_paused(
    store: Store, dag_id: str, paused: bool, *, actor: str = "cli", now: datetime | None = None
) -> bool:
    """Pause or unpause; return whether it changed.

    Unpausing forgets the next run the scheduler had planned (next_dagrun_create_after),
    so it recomputes from now instead of creating a run that went stale while paused.
    """
    now = utc_now(now)
    with store.session() as session:
        row = dags.get_dag(session, dag_id)
        changed = dags.set_paused(session, dag_id, paused)
        if changed and not paused:
            row.next_dagrun_create_after = None
        event = "dags.pause" if paused else "dags.unpause"
        record_audit(
            session, actor=actor, event=event, dag_id=dag_id, extra={"changed": changed}, at=now
        )
        notify_scheduler(session)
    return changed


def _as_dag_time(value: datetime, timezone: Any) -> datetime:
    """A naive datetime is a wall-clock time in the DAG's timezone; aware ones are kept."""
    if value.tzinfo is None or value.utcoffset() is None:
        return localize(value, timezone)
    return coerce_utc(value)


def backfill_intervals(timetable: Timetable, start: datetime, end: datetime) -> list[DataInterval]:
    """The timetable's intervals whose start (the logical date) is in [start, end]."""
    found: list[DataInterval] = []
    info = timetable.next_dagrun_info(None, start_date=start, end_date=end, catchup=True, now=end)
    while info is not None and info.start <= end:
        found.append(info)
        if len(found) > MAX_BACKFILL_RUNS:
            raise DagwatchError(
                f"the range {start.isoformat()} .. {end.isoformat()} has more than "
                f"{MAX_BACKFILL_RUNS} runs; backfill a shorter range"
            )
        following = timetable.next_dagrun_info(
            info.end, start_date=start, end_date=end, catchup=True, now=end
        )
        if following is None or following.start <= info.start:
            break
        info = following
    return found


def backfill(
    store: Store,
    dag_id: str,
    *,
    start: datetime,
    end: datetime,
    conf: Mapping[str, Any] | None = None,
    actor: str = "cli",
    now: datetime | None = None,
    rerun_failed: bool = False,
    dry_run: bool = False,
) -> list[DagRun]:
    """Queue a run for every schedule interval whose logical date is in [start, end].

    Dates that already have a run are skipped, except failed runs with `rerun_failed`,
    which are cleared and queued again. The runs are only queued: the scheduler admits
    them within max_active_runs, which is how a backfill respects it (and, as for
    triggered runs, not while the DAG is paused). Naive `start`/`end` are wall-clock
    times in the DAG's timezone. Returns the runs queued (created or re-queued), by
    logical date; with `dry_run`, those it would queue, unsaved.
    """
    now = utc_now(now)
    try:
        with store.session(readonly=dry_run) as session:
            row, plan = load_plan(session, dag_id)
            if not plan.timetable.periodic:
                raise DagwatchError(
                    f"DAG {dag_id!r} has no schedule, so it has no intervals to backfill; "
                    "trigger single runs instead"
                )
            plan.params.resolve(conf)
            first, last = _as_dag_time(start, plan.timezone), _as_dag_time(end, plan.timezone)
            if first > last:
                raise DagwatchError(
                    f"backfill start {first.isoformat()} is after its end {last.isoformat()}"
                )
            intervals = backfill_intervals(plan.timetable, first, last)
            existing = _runs_between(session, dag_id, intervals)
            rerun = [
                run for run in existing.values() if rerun_failed and run.state == DagRunState.FAILED
            ]
            new = [interval for interval in intervals if interval.start not in existing]
            if dry_run:
                created = [_unsaved_run(dag_id, interval, conf) for interval in new]
            else:
                created = [_create_backfill_run(session, row, i, conf, now) for i in new]
                rows = runs.task_instances_with_runs(
                    session, dag_id, run_ids=[r.run_id for r in rerun]
                )
                reason = f"backfill by {actor}"
                clear_rows(session, plan, rows, now, reason, requeue=rerun)
            queued = sorted([*created, *rerun], key=lambda run: run.logical_date)
            if not dry_run:
                record_audit(
                    session,
                    actor=actor,
                    event="dags.backfill",
                    dag_id=dag_id,
                    extra={
                        "start": first.isoformat(),
                        "end": last.isoformat(),
                        "intervals": len(intervals),
                        "queued": len(queued),
                        "rerun_failed": rerun_failed,
                    },
                    at=now,
                )
                notify_scheduler(session)
    except IntegrityError:  # a run id or date taken meanwhile, or a manual "backfill__" id
        raise DagwatchError(
            f"DAG {dag_id!r} got a run in this range while backfilling; nothing was queued, "
            "run the backfill again"
        ) from None
    return queued


def _runs_between(
    session: Session, dag_id: str, intervals: list[DataInterval]
) -> dict[datetime, DagRun]:
    if not intervals:
        return {}
    rows = runs.runs_between(session, dag_id, intervals[0].start, intervals[-1].start)
    return {row.logical_date: row for row in rows}


def _create_backfill_run(
    session: Session,
    row: Dag,
    interval: DataInterval,
    conf: Mapping[str, Any] | None,
    now: datetime,
) -> DagRun:
    return runs.create_dag_run(
        session,
        row.serialized,
        run_id=f"backfill__{interval.start.isoformat()}",
        run_type="backfill",
        logical_date=interval.start,
        data_interval=(interval.start, interval.end),
        conf=conf,
        state=DagRunState.QUEUED,
        now=now,
        dag_hash=row.dag_hash,
    )


def _unsaved_run(dag_id: str, interval: DataInterval, conf: Mapping[str, Any] | None) -> DagRun:
    """What `_create_backfill_run` would insert, for a dry run (never added to a session)."""
    return DagRun(
        dag_id=dag_id,
        run_id=f"backfill__{interval.start.isoformat()}",
        run_type="backfill",
        state=DagRunState.QUEUED.value,
        logical_date=interval.start,
        data_interval_start=interval.start,
        data_interval_end=interval.end,
        conf=dict(conf or {}),
        external_trigger=True,
    )


def dag_run_state(store: Store, dag_id: str, run_id: str) -> DagRunState:
    """The state of one run (NotFound when there is no such run)."""
    with store.session(readonly=True) as session:
        return DagRunState(runs.get_dag_run(session, dag_id, run_id).state)


def list_runs(
    store: Store,
    *,
    dag_id: str | None = None,
    state: DagRunState | str | None = None,
    limit: int = 100,
) -> list[DagRun]:
    """Runs, newest logical date first; a named DAG must exist (possibly inactive)."""
    with store.session(readonly=True) as session:
        if dag_id is not None and not dags.dag_exists(session, dag_id):
            dags.get_dag(session, dag_id)  # raises NotFound with its hint
        state = DagRunState(state) if state is not None else None
        return runs.list_dag_runs(session, dag_id=dag_id, state=state, limit=limit)


def task_states(store: Store, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """One dict per task instance of the run, in task definition order; a mapped task's
    instances together, by map index."""
    with store.session(readonly=True) as session:
        runs.get_dag_run(session, dag_id, run_id)
        tis = runs.get_task_instances(session, dag_id, run_id)
        first: dict[str, int] = {}
        for ti in tis:  # ordered by id: the first row of a task is where it was defined
            first.setdefault(ti.task_id, ti.id)
        tis.sort(key=lambda ti: (first[ti.task_id], ti.map_index))
        return [{key: getattr(ti, key) for key in _TASK_STATE_KEYS} for ti in tis]
