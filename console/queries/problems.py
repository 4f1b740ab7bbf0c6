"""The rows behind each overview number: what failed, what is late, what is stuck."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import and_, select

from console.queries.common import frame, seconds_between, utcnow
from console.queries.overview import DAY, UNDELIVERED
from engine.states import DAG_RUN_ACTIVE, TASK_FAILED, DagRunState
from engine.store.db import Store
from engine.store.models import Alert, DagRun, ImportError_, SlaMiss, TaskInstance

#: anything that looks like a URL: notifier URLs carry tokens, so none is ever shown
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://\S+")


def scrub_urls(text: str | None) -> str:
    """`text` with every URL reduced to its scheme (`slack://***`)."""
    return _URL.sub(lambda m: f"{m.group(1)}://***", text or "")


def failed_runs(store: Store, *, now: datetime | None = None, limit: int = 200) -> pd.DataFrame:
    """Runs that failed in the last 24 h, newest first."""
    since = utcnow(now) - DAY
    query = (
        select(DagRun.dag_id, DagRun.run_id, DagRun.run_type, DagRun.start_date, DagRun.end_date)
        .where(DagRun.state == DagRunState.FAILED.value, DagRun.end_date >= since)
        .order_by(DagRun.end_date.desc())
        .limit(limit)
    )
    with store.session(readonly=True) as session:
        rows = [
            (*row, seconds_between(row.end_date, row.start_date)) for row in session.execute(query)
        ]
    return frame(rows, ("dag_id", "run_id", "run_type", "start_date", "end_date", "duration_s"))


def failed_tasks(store: Store, *, now: datetime | None = None, limit: int = 200) -> pd.DataFrame:
    """Task instances that failed (or could not run) in the last 24 h, newest first."""
    since = utcnow(now) - DAY
    query = (
        select(
            TaskInstance.dag_id,
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.map_index,
            TaskInstance.state,
            TaskInstance.try_number,
            TaskInstance.end_date,
            TaskInstance.hostname,
        )
        .where(TaskInstance.state.in_(sorted(TASK_FAILED)), TaskInstance.end_date >= since)
        .order_by(TaskInstance.end_date.desc())
        .limit(limit)
    )
    columns = ("dag_id", "run_id", "task_id", "map_index", "state", "try_number", "end_date")
    with store.session(readonly=True) as session:
        rows = [tuple(row)[:7] for row in session.execute(query)]
    return frame(rows, columns)


def active_tasks(
    store: Store, state: str, *, now: datetime | None = None, limit: int = 200
) -> pd.DataFrame:
    """Queued or running task instances, the longest waiting first, with their age."""
    now = utcnow(now)
    since = TaskInstance.queued_at if state == "queued" else TaskInstance.start_date
    query = (
        select(
            TaskInstance.dag_id,
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.map_index,
            TaskInstance.try_number,
            TaskInstance.pool,
            TaskInstance.hostname,
            since.label("since"),
        )
        .where(TaskInstance.state == state)
        .order_by(since)
        .limit(limit)
    )
    with store.session(readonly=True) as session:
        rows = [(*row, seconds_between(now, row.since)) for row in session.execute(query)]
    columns = ("dag_id", "run_id", "task_id", "map_index", "try_number", "pool", "hostname")
    return frame(rows, (*columns, "since", "for_s"))


def sla_misses(store: Store, *, now: datetime | None = None, limit: int = 200) -> pd.DataFrame:
    """SLA misses and missed deadlines detected in the last 24 h, newest first."""
    since = utcnow(now) - DAY
    query = (
        select(
            SlaMiss.kind,
            SlaMiss.dag_id,
            SlaMiss.run_id,
            SlaMiss.task_id,
            SlaMiss.deadline,
            SlaMiss.detected_at,
            SlaMiss.state,
            SlaMiss.notified,
        )
        .where(SlaMiss.detected_at >= since)
        .order_by(SlaMiss.detected_at.desc())
        .limit(limit)
    )
    columns = ("kind", "dag_id", "run_id", "task_id", "deadline", "detected_at", "state")
    with store.session(readonly=True) as session:
        return frame(session.execute(query), (*columns, "notified"))


def runs_at_risk(store: Store, *, now: datetime | None = None, limit: int = 200) -> pd.DataFrame:
    """Active runs forecast to miss their deadline (a deadline_at_risk alert in 24 h), with
    the forecast the alert carried (`payload`)."""
    since = utcnow(now) - DAY
    query = (
        select(
            Alert.dag_id, Alert.run_id, Alert.task_id, DagRun.state, Alert.created_at, Alert.payload
        )
        .join(DagRun, and_(DagRun.dag_id == Alert.dag_id, DagRun.run_id == Alert.run_id))
        .where(
            Alert.event == "deadline_at_risk",
            Alert.created_at >= since,
            DagRun.state.in_(sorted(DAG_RUN_ACTIVE)),
        )
        .order_by(Alert.created_at.desc())
        .limit(limit)
    )
    with store.session(readonly=True) as session:
        return frame(
            session.execute(query),
            ("dag_id", "run_id", "task_id", "run_state", "warned_at", "payload"),
        )


#: What an alert listing shows first (attribute names are the column names).
_ALERT_COLUMNS = ("id", "event", "route", "dag_id", "run_id", "task_id", "status", "attempts")


def _alert_columns() -> list[Any]:
    return [getattr(Alert, name) for name in _ALERT_COLUMNS]


def undelivered_alerts(store: Store, *, limit: int = 200) -> pd.DataFrame:
    """Alerts still pending or given up on, oldest first; errors without their URLs."""
    query = (
        select(
            *_alert_columns(),
            Alert.possible_duplicate,
            Alert.created_at,
            Alert.next_attempt_at,
            Alert.last_error,
        )
        .where(Alert.status.in_(UNDELIVERED))
        .order_by(Alert.created_at)
        .limit(limit)
    )
    with store.session(readonly=True) as session:
        rows = [(*row[:-1], scrub_urls(row[-1])) for row in session.execute(query)]
    later = ("possible_duplicate", "created_at", "next_attempt_at", "last_error")
    return frame(rows, (*_ALERT_COLUMNS, *later))


def possible_duplicates(
    store: Store, *, now: datetime | None = None, limit: int = 100
) -> pd.DataFrame:
    """Alerts of the last 24 h a crash may have delivered twice (a delivery of theirs was
    interrupted mid-send, then retried), newest first."""
    since = utcnow(now) - DAY
    query = (
        select(*_alert_columns(), Alert.created_at, Alert.sent_at)
        .where(Alert.created_at >= since, Alert.possible_duplicate.is_(True))
        .order_by(Alert.created_at.desc())
        .limit(limit)
    )
    with store.session(readonly=True) as session:
        return frame(session.execute(query), (*_ALERT_COLUMNS, "created_at", "sent_at"))


def import_errors(store: Store, *, limit: int = 100) -> pd.DataFrame:
    """Broken DAG files, newest first, with the error's last line up front."""
    query = (
        select(ImportError_.filename, ImportError_.timestamp, ImportError_.stacktrace)
        .order_by(ImportError_.timestamp.desc())
        .limit(limit)
    )
    with store.session(readonly=True) as session:
        rows = [
            (name, at, (trace.strip().splitlines() or [""])[-1], trace)
            for name, at, trace in session.execute(query)
        ]
    return frame(rows, ("filename", "timestamp", "error", "stacktrace"))
