"""The DAG detail page: the grid of the newest runs, one run's gantt, durations, logs."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import and_, select

from console.queries.common import frame, seconds_between, symbol, utcnow
from engine.execution.runner import log_path_for
from engine.sdk.schedules import describe_schedule
from engine.states import TaskState, combined_state
from engine.store.db import Store
from engine.store.models import (
    Dag,
    DagRun,
    RenderedFields,
    StateTransition,
    TaskInstance,
    TaskTry,
    XCom,
)

#: a log longer than this shows its end (the error is usually there)
LOG_TAIL_BYTES = 256 * 1024
RUN_COLUMNS = ("run_id", "logical_date", "run_type", "state", "start_date", "end_date")
TI_COLUMNS = (
    "run_id",
    "task_id",
    "map_index",
    "state",
    "try_number",
    "start_date",
    "end_date",
    "duration",
    "next_retry_at",
)


@dataclass(frozen=True)
class DagInfo:
    """One DAG as the detail page shows it: its row and its serialized structure."""

    dag_id: str
    paused: bool
    schedule: str | None
    owner: str | None
    tags: list[str]
    next_run: datetime | None
    description: str | None
    serialized: dict[str, Any] = field(repr=False)

    @property
    def task_ids(self) -> list[str]:
        return [task["task_id"] for task in self.serialized.get("tasks", [])]

    @property
    def mapped(self) -> set[str]:
        return {t["task_id"] for t in self.serialized.get("tasks", []) if t.get("mapping")}

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.serialized.get("params") or {})

    @property
    def deadline_seconds(self) -> float | None:
        """The run-duration line the durations chart draws: the deadline or dagrun_timeout."""
        deadline = self.serialized.get("deadline") or {}
        if deadline.get("reference") not in (None, "time_of_day") and deadline.get("interval"):
            return float(deadline["interval"])
        timeout = self.serialized.get("dagrun_timeout")
        return float(timeout) if timeout else None


def dag_info(store: Store, dag_id: str) -> DagInfo | None:
    """The DAG, or None when there is no such DAG."""
    with store.session(readonly=True) as session:
        row = session.get(Dag, dag_id)
        if row is None:
            return None
        return DagInfo(
            row.dag_id,
            bool(row.is_paused),
            describe_schedule(row.schedule),
            row.owner,
            list(row.tags or []),
            row.next_dagrun,
            row.description,
            row.serialized,
        )


@dataclass(frozen=True)
class Grid:
    """The newest runs of a DAG (newest first) and the task instances of exactly those runs."""

    runs: pd.DataFrame
    task_instances: pd.DataFrame
    has_older: bool


def grid(store: Store, dag_id: str, *, limit: int = 25, before: datetime | None = None) -> Grid:
    """`limit` runs older than `before` (default: the newest) and their task instances."""
    query = select(
        DagRun.run_id,
        DagRun.logical_date,
        DagRun.run_type,
        DagRun.state,
        DagRun.start_date,
        DagRun.end_date,
    ).where(DagRun.dag_id == dag_id)
    if before is not None:
        query = query.where(DagRun.logical_date < before)
    query = query.order_by(DagRun.logical_date.desc()).limit(limit + 1)
    with store.session(readonly=True) as session:
        runs = session.execute(query).all()
        has_older = len(runs) > limit
        runs = runs[:limit]
        run_ids = [run.run_id for run in runs]
        tis = (
            session.execute(
                select(*(getattr(TaskInstance, c) for c in TI_COLUMNS)).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id.in_(run_ids)
                )
            ).all()
            if run_ids
            else []
        )
    return Grid(frame(runs, RUN_COLUMNS), frame(tis, TI_COLUMNS), has_older)


def cell(rows: list[Any], now: datetime) -> tuple[str, str]:
    """One grid cell and its state, from its task instances (rows of TI_COLUMNS): the
    state and the try number; a mapped task's instances as their combined state and
    count; a waiting sensor with its next poke; a running one with how long it has run."""
    if not rows:
        return "", ""
    if len(rows) > 1 or rows[0].map_index >= 0:
        state = combined_state(row.state for row in rows).value
        done = sum(row.state in _ENDED for row in rows)
        return f"{symbol(state)} [{done}/{len(rows)} mapped]", state
    row = rows[0]
    text = f"{symbol(row.state)} #{int(row.try_number)}"
    if row.state == TaskState.UP_FOR_RESCHEDULE and _present(row.next_retry_at):
        text += f" next poke {row.next_retry_at:%H:%M:%S}"
    elif row.state == TaskState.RUNNING and _present(row.start_date):
        text += f" {seconds_between(now, row.start_date):.0f}s"
    return text, str(row.state)


_ENDED = frozenset({"success", "skipped", "failed", "upstream_failed"})


def _present(value: Any) -> bool:
    return value is not None and not pd.isna(value)


#: the grid's first row: each run's own state
RUN_ROW = "(run)"


def run_label(run: Any) -> str:
    return f"{run.logical_date:%m-%d %H:%M:%S}"


def grid_table(
    info: DagInfo, data: Grid, *, now: datetime | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tasks (in definition order, after a row of run states) x runs (newest first): the
    cells' text and, in the same shape, their states (for colouring)."""
    now = utcnow(now)
    by_key: dict[tuple[str, str], list[Any]] = {}
    for row in data.task_instances.itertuples(index=False):
        by_key.setdefault((row.task_id, row.run_id), []).append(row)
    text: dict[str, list[str]] = {}
    states: dict[str, list[str]] = {}
    for run in data.runs.itertuples():
        label = run_label(run)
        while label in text:  # two runs in one minute: keep both columns
            label += "'"
        cells = [cell(by_key.get((t, run.run_id), []), now) for t in info.task_ids]
        text[label] = [symbol(run.state), *(c[0] for c in cells)]
        states[label] = [run.state, *(c[1] for c in cells)]
    index = pd.Index([RUN_ROW, *info.task_ids], name="task")
    return pd.DataFrame(text, index=index), pd.DataFrame(states, index=index)


def mapped_instances(store: Store, dag_id: str, run_id: str, task_id: str) -> pd.DataFrame:
    """The instances of one mapped task in one run, by map index."""
    query = (
        select(*(getattr(TaskInstance, c) for c in TI_COLUMNS))
        .where(
            TaskInstance.dag_id == dag_id,
            TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id,
        )
        .order_by(TaskInstance.map_index)
    )
    with store.session(readonly=True) as session:
        return frame(session.execute(query), TI_COLUMNS)


def running_tasks(store: Store, dag_id: str, *, now: datetime | None = None) -> pd.DataFrame:
    """This DAG's running task instances with how long they have run so far."""
    now = utcnow(now)
    query = (
        select(
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.map_index,
            TaskInstance.try_number,
            TaskInstance.start_date,
            TaskInstance.hostname,
        )
        .where(TaskInstance.dag_id == dag_id, TaskInstance.state == TaskState.RUNNING.value)
        .order_by(TaskInstance.start_date)
        .limit(200)
    )
    with store.session(readonly=True) as session:
        rows = [(*row, seconds_between(now, row.start_date)) for row in session.execute(query)]
    columns = ("run_id", "task_id", "map_index", "try_number", "start_date", "hostname")
    return frame(rows, (*columns, "running_for_s"))


def gantt(store: Store, dag_id: str, run_id: str) -> pd.DataFrame:
    """Every try of every task instance of one run: when it was queued, started, ended."""
    tries_query = (
        select(
            TaskTry.task_id,
            TaskTry.map_index,
            TaskTry.try_number,
            TaskTry.state,
            TaskTry.start_date,
            TaskTry.end_date,
        )
        .where(TaskTry.dag_id == dag_id, TaskTry.run_id == run_id)
        .order_by(TaskTry.start_date, TaskTry.id)
    )
    queued_query = select(
        StateTransition.task_id, StateTransition.map_index, StateTransition.at
    ).where(
        StateTransition.dag_id == dag_id,
        StateTransition.run_id == run_id,
        StateTransition.entity == "task_instance",
        StateTransition.to_state == TaskState.QUEUED.value,
    )
    with store.session(readonly=True) as session:
        tries = session.execute(tries_query).all()
        queued: dict[tuple[str | None, int], list[datetime]] = {}
        for task_id, map_index, at in session.execute(queued_query):
            queued.setdefault((task_id, map_index if map_index is not None else -1), []).append(at)
    rows = []
    for t in tries:
        # the try was queued at the latest queued transition before it started
        candidates = [at for at in queued.get((t.task_id, t.map_index), []) if at <= t.start_date]
        queued_at = max(candidates) if candidates else t.start_date
        label = t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"
        rows.append((label, t.try_number, t.state, queued_at, t.start_date, t.end_date))
    return frame(rows, ("task", "try_number", "state", "queued_at", "start_date", "end_date"))


def run_durations(store: Store, dag_id: str, *, limit: int = 100) -> tuple[pd.DataFrame, dict]:
    """The newest finished runs' durations (oldest first, for a chart) and their median and
    95th percentile in seconds."""
    query = (
        select(DagRun.run_id, DagRun.logical_date, DagRun.state, DagRun.start_date, DagRun.end_date)
        .where(DagRun.dag_id == dag_id, DagRun.end_date.is_not(None))
        .order_by(DagRun.logical_date.desc())
        .limit(limit)
    )
    with store.session(readonly=True) as session:
        rows = [
            (r.run_id, r.logical_date, r.state, seconds_between(r.end_date, r.start_date))
            for r in session.execute(query)
            if r.start_date is not None
        ]
    table = frame(reversed(rows), ("run_id", "logical_date", "state", "duration_s"))
    durations = sorted(float(d) for d in table["duration_s"])
    stats: dict[str, float | None] = {"median": None, "p95": None}
    if durations:
        stats["median"] = statistics.median(durations)
        stats["p95"] = durations[min(len(durations) - 1, round(0.95 * (len(durations) - 1)))]
    return table, stats


def task_tries(
    store: Store, dag_id: str, run_id: str, task_id: str, map_index: int = -1
) -> pd.DataFrame:
    """The tries of one task instance (mapped: one map index), oldest first."""
    query = (
        select(
            TaskTry.try_number,
            TaskTry.state,
            TaskTry.start_date,
            TaskTry.end_date,
            TaskTry.hostname,
            TaskTry.log_path,
            TaskTry.error,
        )
        .where(
            TaskTry.dag_id == dag_id,
            TaskTry.run_id == run_id,
            TaskTry.task_id == task_id,
            TaskTry.map_index == map_index,
        )
        .order_by(TaskTry.try_number)
    )
    columns = ("try_number", "state", "start_date", "end_date", "hostname", "log_path", "error")
    with store.session(readonly=True) as session:
        return frame(session.execute(query), columns)


def read_log(
    log_path: str | None,
    *,
    base: Path,
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int,
    map_index: int = -1,
    max_bytes: int = LOG_TAIL_BYTES,
) -> str:
    """The attempt's log (its last `max_bytes`), or a line saying why there is none."""
    path = (
        Path(log_path)
        if log_path
        else log_path_for(base, dag_id, run_id, task_id, try_number, map_index)
    )
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            if size > max_bytes:
                handle.seek(size - max_bytes)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(no log file for try {try_number}: {path.name} is not on this machine)"
    if size > max_bytes:
        text = f"(showing the last {max_bytes // 1024} KiB of {size // 1024} KiB)\n" + text
    return text


def xcoms(
    store: Store, dag_id: str, run_id: str, task_id: str, map_index: int = -1
) -> pd.DataFrame:
    """The values a task instance pushed, as JSON text."""
    query = (
        select(XCom.key, XCom.value, XCom.timestamp)
        .where(
            and_(
                XCom.dag_id == dag_id,
                XCom.run_id == run_id,
                XCom.task_id == task_id,
                XCom.map_index == map_index,
            )
        )
        .order_by(XCom.key)
        .limit(200)
    )
    with store.session(readonly=True) as session:
        rows = [
            (key, json.dumps(value, default=str)[:10_000], at)
            for key, value, at in session.execute(query)
        ]
    return frame(rows, ("key", "value", "timestamp"))


def rendered_fields(
    store: Store, dag_id: str, run_id: str, task_id: str, map_index: int = -1
) -> pd.DataFrame:
    """The template fields as the task instance's latest attempt rendered them (masked)."""
    query = select(RenderedFields.try_number, RenderedFields.fields).where(
        RenderedFields.dag_id == dag_id,
        RenderedFields.run_id == run_id,
        RenderedFields.task_id == task_id,
        RenderedFields.map_index == map_index,
    )
    with store.session(readonly=True) as session:
        row = session.execute(query).first()
    if row is None:
        return frame([], ("field", "value", "try_number"))
    return frame(
        ((name, value, row.try_number) for name, value in sorted(row.fields.items())),
        ("field", "value", "try_number"),
    )
