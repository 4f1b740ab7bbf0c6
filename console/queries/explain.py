"""Why isn't it running? The scheduler's own answer (`engine.scheduling.explain`, the code behind
`dagwatch tasks failed-deps` and `dagwatch dags failed-deps`), and its parts as tables."""

from __future__ import annotations

import os
from datetime import datetime

import pandas as pd
from sqlalchemy import select

from console.queries.common import frame, seconds_between, utcnow
from engine.config import Config, load_config
from engine.scheduling import explain
from engine.states import TASK_FINISHED
from engine.store.db import Store
from engine.store.models import DagRun, TaskInstance

Explanation = explain.Explanation


def _config(config: Config | None) -> Config:
    """The limits the scheduler applies come from the configuration the console runs with."""
    return config if config is not None else load_config(os.environ)


def task(
    store: Store,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int | None = None,
    *,
    config: Config | None = None,
    now: datetime | None = None,
) -> Explanation:
    """Why one task instance is not running."""
    return explain.explain_task(
        store, _config(config), dag_id, run_id, task_id, map_index, now=utcnow(now)
    )


def run(
    store: Store,
    dag_id: str,
    run_id: str,
    *,
    config: Config | None = None,
    now: datetime | None = None,
) -> Explanation:
    """Why a run is not running, or which of its task instances wait and why."""
    return explain.explain_run(store, _config(config), dag_id, run_id, now=utcnow(now))


def dag(
    store: Store,
    dag_id: str,
    *,
    config: Config | None = None,
    now: datetime | None = None,
) -> Explanation:
    """Why a DAG's next run has not started."""
    return explain.explain_dag(store, _config(config), dag_id, now=utcnow(now))


def holders(found: Explanation) -> pd.DataFrame:
    """Who holds the full pool, the longest first, with how long each has held its slots."""
    rows = [
        (
            h.pool,
            h.dag_id,
            h.run_id,
            h.task_id,
            h.map_index,
            h.state,
            h.pool_slots,
            h.hostname,
            h.since,
            seconds_between(found.held_at, h.since),
        )
        for h in found.holders
    ]
    columns = ("pool", "dag_id", "run_id", "task_id", "map_index", "state", "pool_slots")
    table = frame(rows, (*columns, "hostname", "since", "held_s"))
    table.insert(len(columns), "held", [explain.duration_text(s) for s in table.held_s])
    return table


def runs_in_the_way(found: Explanation) -> pd.DataFrame:
    """The runs filling max_active_runs (or admitted first), with how long each has run."""
    rows = [(r.dag_id, r.run_id, r.state, r.logical_date, r.start_date) for r in found.runs]
    table = frame(rows, ("dag_id", "run_id", "state", "logical_date", "start_date"))
    table["running_s"] = [seconds_between(found.held_at, r.start_date) for r in found.runs]
    table["running"] = [explain.duration_text(s) for s in table.running_s]
    return table


def upstream(found: Explanation) -> pd.DataFrame:
    return frame(found.upstream, ("task_id", "state"))


def waiting(found: Explanation, limit: int = 200) -> pd.DataFrame:
    """A run's task instances that are not running, and why (at most `limit`)."""
    rows = [(w.task_id, w.map_index, w.state, w.kind, w.reason, w.due) for w in found.waiting]
    return frame(rows[:limit], ("task_id", "map_index", "state", "kind", "reason", "due"))


def pick_run(store: Store, dag_id: str, limit: int = 50) -> pd.DataFrame:
    """A DAG's newest runs (to pick one), unfinished first."""
    query = (
        select(DagRun.run_id, DagRun.state, DagRun.logical_date)
        .where(DagRun.dag_id == dag_id)
        .order_by(DagRun.logical_date.desc())
        .limit(limit)
    )
    with store.session(readonly=True) as session:
        table = frame(session.execute(query), ("run_id", "state", "logical_date"))
    return table.sort_values("state", key=lambda s: s.isin(["success", "failed"]), kind="stable")


def pick_task(store: Store, dag_id: str, run_id: str, limit: int = 500) -> pd.DataFrame:
    """A run's task instances (to pick one), those not finished first."""
    query = (
        select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state)
        .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        .order_by(TaskInstance.task_id, TaskInstance.map_index)
        .limit(limit)
    )
    with store.session(readonly=True) as session:
        table = frame(session.execute(query), ("task_id", "map_index", "state"))
    finished = {str(state) for state in TASK_FINISHED}
    return table.sort_values("state", key=lambda s: s.isin(finished), kind="stable")
