"""The metastore's gauges read at scrape time (`engine.observability.collector`): one
snapshot of counts per scrape, in a few aggregated statements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from engine.states import DAG_RUN_ACTIVE, DagRunState
from engine.store.models import Dag, DagFile, DagRun, ImportError_, TaskInstance
from engine.store.scheduling import pool_sizes


@dataclass
class Snapshot:
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


def read_snapshot(session: Session, ti_states: Sequence[str]) -> Snapshot:
    """Everything the gauges need, in seven aggregated statements; task instances per
    (queue, dag, task, pool, slots, state) only for `ti_states`."""
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
        .where(TaskInstance.state.in_(list(ti_states)))
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
    return Snapshot(
        pools=pool_sizes(session),
        tis=tis,
        active_states={state: int(n) for state, n in active_states},
        running_runs=int(counts[0]),
        queued_runs={dag_id: since for dag_id, since in queued_runs if since is not None},
        active_dags=int(counts[1]),
        import_error_files=list(session.execute(select(ImportError_.filename)).scalars()),
        parsed_files=dict(session.execute(select(DagFile.fileloc, DagFile.last_parsed)).all()),
    )
