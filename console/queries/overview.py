"""The overview's figures: process health, capacity, what failed and what is late."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import and_, func, select

from console.queries.common import frame, utcnow
from engine.states import DAG_RUN_ACTIVE, TASK_FAILED, DagRunState, TaskState
from engine.store.db import Store
from engine.store.models import (
    Alert,
    DagRun,
    ImportError_,
    Job,
    SlaMiss,
    TaskInstance,
)

DAY = timedelta(hours=24)
#: alert statuses that mean "not (yet) delivered"
UNDELIVERED = ("pending", "failed")
HEARTBEAT_COLUMNS = (
    "job_type",
    "hostname",
    "pid",
    "heartbeat_age_s",
    "last_loop_seconds",
    "slots_used",
    "slots_open",
    "started",
)


def heartbeats(store: Store, *, now: datetime | None = None, limit: int = 20) -> pd.DataFrame:
    """The running scheduler and DAG-processor jobs, freshest heartbeat first."""
    now = utcnow(now)
    query = (
        select(Job).where(Job.state == "running").order_by(Job.latest_heartbeat.desc()).limit(limit)
    )
    with store.session(readonly=True) as session:
        jobs = session.execute(query).scalars().all()
    rows = [
        (
            job.job_type,
            job.hostname,
            job.pid,
            round((now - job.latest_heartbeat).total_seconds(), 1),
            job.last_loop_seconds,
            job.slots_used,
            job.slots_open,
            job.start_date,
        )
        for job in jobs
    ]
    return frame(rows, HEARTBEAT_COLUMNS)


def counts(store: Store, *, now: datetime | None = None) -> dict[str, int]:
    """The overview's numbers, each one indexed COUNT."""
    now = utcnow(now)
    since = now - DAY
    ti_state = select(func.count()).select_from(TaskInstance)
    queries: dict[str, Any] = {
        "queued": ti_state.where(TaskInstance.state == TaskState.QUEUED.value),
        "running": ti_state.where(TaskInstance.state == TaskState.RUNNING.value),
        "failed_tasks_24h": ti_state.where(
            TaskInstance.state.in_(sorted(TASK_FAILED)), TaskInstance.end_date >= since
        ),
        "failed_runs_24h": select(func.count())
        .select_from(DagRun)
        .where(DagRun.state == DagRunState.FAILED.value, DagRun.end_date >= since),
        "sla_misses_24h": select(func.count())
        .select_from(SlaMiss)
        .where(SlaMiss.detected_at >= since),
        "runs_at_risk": select(func.count(func.distinct(Alert.run_id)))
        .select_from(Alert)
        .join(DagRun, and_(DagRun.dag_id == Alert.dag_id, DagRun.run_id == Alert.run_id))
        .where(
            Alert.event == "deadline_at_risk",
            Alert.created_at >= since,
            DagRun.state.in_(sorted(DAG_RUN_ACTIVE)),
        ),
        "import_errors": select(func.count()).select_from(ImportError_),
        "undelivered_alerts": select(func.count())
        .select_from(Alert)
        .where(Alert.status.in_(UNDELIVERED)),
    }
    with store.session(readonly=True) as session:
        return {name: int(session.execute(query).scalar_one()) for name, query in queries.items()}


def verdict(figures: dict[str, int], jobs: pd.DataFrame, *, heartbeat_timeout: float) -> list[str]:
    """What is wrong, worst first, in words (an empty list: all is well)."""
    problems: list[str] = []
    schedulers = jobs[jobs["job_type"] == "scheduler"]
    if schedulers.empty:
        problems.append("no scheduler is running: nothing will be scheduled")
    elif float(schedulers["heartbeat_age_s"].min()) > heartbeat_timeout:
        age = float(schedulers["heartbeat_age_s"].min())
        problems.append(
            f"the scheduler's heartbeat is {age:.0f} s old (timeout {heartbeat_timeout:g} s)"
        )
    words = {
        "failed_runs_24h": "failed runs in 24 h",
        "failed_tasks_24h": "failed task instances in 24 h",
        "sla_misses_24h": "SLA misses in 24 h",
        "runs_at_risk": "runs at risk of missing their deadline",
        "import_errors": "DAG files that do not import",
        "undelivered_alerts": "alerts not delivered",
    }
    problems.extend(f"{text}: {figures[key]}" for key, text in words.items() if figures.get(key))
    return problems
