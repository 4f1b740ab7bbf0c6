"""Creating scheduled DAG runs when they are due, and admitting queued runs.

Runs are created from each DAG's timetable (cron, preset, timedelta, @once) in its
timezone. A run is created once its data interval has ended (`run_after <= now`);
with `catchup` every missed interval gets a run, without it only the latest. Runs
start `queued` and are admitted to `running` within `max_active_runs`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from engine.parsing.serialization import SerializedDAG
from engine.states import DagRunState
from engine.store import runs, scheduling, transitions
from engine.store.models import Dag, DagRun

log = logging.getLogger(__name__)

#: At most this many runs of one DAG are created per tick (catch-up is spread out).
MAX_RUNS_PER_DAG_PER_TICK = 16


def create_due_runs(
    session: Session,
    now: datetime,
    *,
    plan_of: Callable[[Dag], SerializedDAG],
    default_max_active_runs: int,
) -> list[tuple[str, str]]:
    """Create the scheduled runs that are due; return their (dag_id, run_id)."""
    due = scheduling.due_dags(session, now)
    if not due:
        return []
    active = scheduling.active_run_counts(session)
    last_ends = scheduling.last_scheduled_interval_ends(session, [row.dag_id for row in due])
    created: list[tuple[str, str]] = []
    for row in due:
        plan = plan_of(row)
        limit = plan.max_active_runs or default_max_active_runs
        created += _create_for_dag(
            session, row, plan, now, last_ends.get(row.dag_id), limit - active.get(row.dag_id, 0)
        )
    return created


def _create_for_dag(
    session: Session,
    row: Dag,
    plan: SerializedDAG,
    now: datetime,
    last_end: datetime | None,
    room: int,
) -> list[tuple[str, str]]:
    timetable = plan.timetable
    created: list[tuple[str, str]] = []

    def next_info(after: datetime | None) -> Any:
        return timetable.next_dagrun_info(after, plan.start_date, plan.end_date, plan.catchup, now)

    info = next_info(last_end) if timetable.periodic else None
    while (
        info is not None
        and info.run_after <= now
        and len(created) < min(room, MAX_RUNS_PER_DAG_PER_TICK)
    ):
        run_id = f"scheduled__{info.start.isoformat()}"
        if runs.find_dag_run_by_date(session, row.dag_id, info.start) is None:
            runs.create_dag_run(
                session,
                plan.data,
                run_id=run_id,
                run_type="scheduled",
                logical_date=info.start,
                data_interval=(info.start, info.end),
                conf=None,
                state=DagRunState.QUEUED,
                now=now,
                dag_hash=row.dag_hash,
            )
            created.append((row.dag_id, run_id))
            log.info("created run %s of %s", run_id, row.dag_id)
        else:  # a manual run holds that date: the interval counts as done, as in Airflow
            log.info("skipped interval %s of %s: a run exists", info.start, row.dag_id)
        info = next_info(info.end)
    scheduling.set_next_dagrun(
        session,
        row.dag_id,
        interval_start=info.start if info else None,
        interval_end=info.end if info else None,
        create_after=info.run_after if info else scheduling.NEVER,
    )
    return created


def start_queued_runs(
    session: Session,
    now: datetime,
    queued: Sequence[DagRun],
    *,
    max_active_runs_of: Callable[[str], int],
    paused: Callable[[str], bool],
) -> list[tuple[int, str, str]]:
    """queued → running, oldest logical date first, within each DAG's max_active_runs."""
    if not queued:
        return []
    running = scheduling.running_run_counts(session)
    started: list[tuple[int, str, str]] = []
    for run in queued:
        if paused(run.dag_id) or running.get(run.dag_id, 0) >= max_active_runs_of(run.dag_id):
            continue
        transitions.transition_dag_run(
            session,
            run.id,
            expected=DagRunState.QUEUED,
            to=DagRunState.RUNNING,
            at=now,
            start_date=now,
            end_date=None,
        )
        running[run.dag_id] = running.get(run.dag_id, 0) + 1
        started.append((run.id, run.dag_id, run.run_id))
    return started
