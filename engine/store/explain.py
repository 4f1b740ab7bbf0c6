"""The reads behind "why isn't it running?": who holds a pool, which runs are in the way,
whether a scheduler is alive. Each is one bounded query (`engine.scheduling.explain` uses them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.states import DagRunState, TaskState
from engine.store.models import DagRun, Job, TaskInstance

#: at most this many slot holders or runs in the way are named
NAMED = 20


@dataclass(frozen=True)
class Holder:
    """A queued or running task instance holding slots of a pool."""

    pool: str
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str
    pool_slots: int
    hostname: str | None
    since: datetime | None  #: when it took its slots (queued, or started if no queue time)


def pool_holders(session: Session, pools: Sequence[str], limit: int = NAMED) -> list[Holder]:
    """The task instances holding slots of `pools`, the longest holders first, in one query
    (`ix_task_instance_state_pool`)."""
    if not pools:
        return []
    since = func.coalesce(TaskInstance.queued_at, TaskInstance.start_date)
    rows = session.execute(
        select(
            TaskInstance.pool,
            TaskInstance.dag_id,
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.map_index,
            TaskInstance.state,
            TaskInstance.pool_slots,
            TaskInstance.hostname,
            since.label("since"),
        )
        .where(
            TaskInstance.state.in_([TaskState.QUEUED.value, TaskState.RUNNING.value]),
            TaskInstance.pool.in_(sorted(set(pools))),
        )
        .order_by(since, TaskInstance.id)
        .limit(limit)
    )
    return [Holder(*row) for row in rows]


@dataclass(frozen=True)
class RunRow:
    """A run named as being in the way (or waiting ahead)."""

    dag_id: str
    run_id: str
    state: str
    logical_date: datetime
    start_date: datetime | None


def runs_of_dag(
    session: Session, dag_id: str, states: Sequence[DagRunState], limit: int = NAMED
) -> list[RunRow]:
    """A DAG's runs in `states`, oldest logical date first (`ix_dag_run_state_dag_id`)."""
    rows = session.execute(
        select(DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.logical_date, DagRun.start_date)
        .where(DagRun.state.in_([s.value for s in states]), DagRun.dag_id == dag_id)
        .order_by(DagRun.logical_date)
        .limit(limit)
    )
    return [RunRow(*row) for row in rows]


def queued_runs_before(session: Session, dag_id: str, logical_date: datetime) -> list[RunRow]:
    """Queued runs of the DAG with an older logical date: the scheduler admits them first."""
    rows = session.execute(
        select(DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.logical_date, DagRun.start_date)
        .where(
            DagRun.state == DagRunState.QUEUED.value,
            DagRun.dag_id == dag_id,
            DagRun.logical_date < logical_date,
        )
        .order_by(DagRun.logical_date)
        .limit(NAMED)
    )
    return [RunRow(*row) for row in rows]


def latest_scheduler_heartbeat(session: Session) -> datetime | None:
    """The newest heartbeat of a running scheduler job; None when none runs
    (`ix_job_job_type_state`)."""
    return session.execute(
        select(func.max(Job.latest_heartbeat)).where(
            Job.job_type == "scheduler", Job.state == "running"
        )
    ).scalar_one_or_none()
