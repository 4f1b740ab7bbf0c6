"""Failures grouped by error signature: "is this one problem or twenty?".

A failure is a try that ended failed or up_for_retry. Tries carry the signature of their
error (`engine.store.error_signature`, written with the error and indexed with `end_date`), so
grouping a window is a GROUP BY over that index; only the example shown for each group is
normalised here, never the thousands of errors behind the counts.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import and_, func, select

from console.queries.common import frame, utcnow
from engine.states import TaskState
from engine.store.db import Store
from engine.store.error_signature import headline
from engine.store.models import TaskTry

#: the windows the page offers
WINDOWS = {"1 h": timedelta(hours=1), "24 h": timedelta(days=1), "7 d": timedelta(days=7)}
#: a try that ended in one of these states failed (up_for_retry: it failed and will retry)
FAILED_TRIES = (TaskState.FAILED.value, TaskState.UP_FOR_RETRY.value)
#: the group of tries that ended without an error recorded
NO_ERROR = "(no error recorded)"
#: DAG and task names listed per group before "and N more"
NAMED = 5

COLUMNS = (
    "signature",
    "failures",
    "dag_count",
    "task_count",
    "dags",
    "tasks",
    "first_seen",
    "last_seen",
    "example_dag_id",
    "example_run_id",
    "example_task_id",
    "example_map_index",
    "example_try_number",
    "example_error",
    "example_log_path",
    "key",
)


def by_signature(
    store: Store, window: str = "24 h", *, now: datetime | None = None, limit: int = 50
) -> pd.DataFrame:
    """The failures of the last `window`, one row per signature, the most frequent first:
    how many, which DAGs and tasks, first and last seen in the window, and the newest try
    as the example (its error and its log)."""
    if window not in WINDOWS:
        raise ValueError(f"window {window!r} is not one of {', '.join(WINDOWS)}")
    now = utcnow(now)
    since = now - WINDOWS[window]
    key = func.coalesce(TaskTry.error_signature, "")
    in_window = _failed_between(since, now)
    groups_query = (
        select(
            key.label("key"),
            func.count().label("failures"),
            func.count(func.distinct(TaskTry.dag_id)),
            func.min(TaskTry.end_date),
            func.max(TaskTry.end_date),
        )
        .where(in_window)
        .group_by(key)
        .order_by(func.count().desc(), func.max(TaskTry.end_date).desc())
        .limit(limit)
    )
    with store.session(readonly=True) as session:
        groups = session.execute(groups_query).all()
        if not groups:
            return frame([], COLUMNS)
        keys = [row[0] for row in groups]
        last_seen = {row[0]: row[4] for row in groups}
        # the example of a group is its newest try: the one that ended at its last_seen
        examples: dict[str, Any] = {}
        for row in session.execute(
            select(
                key,
                TaskTry.end_date,
                TaskTry.dag_id,
                TaskTry.run_id,
                TaskTry.task_id,
                TaskTry.map_index,
                TaskTry.try_number,
                TaskTry.error,
                TaskTry.log_path,
            )
            .where(in_window, TaskTry.end_date.in_({row[4] for row in groups}), key.in_(keys))
            .order_by(TaskTry.id.desc())
        ):
            if row[1] == last_seen.get(row[0]):
                examples.setdefault(row[0], row)
        affected = session.execute(
            select(key, TaskTry.dag_id, TaskTry.task_id)
            .where(in_window, key.in_(keys))
            .group_by(key, TaskTry.dag_id, TaskTry.task_id)
            .limit(limit * 200)
        ).all()
    dags: dict[str, set[str]] = defaultdict(set)
    tasks: dict[str, set[str]] = defaultdict(set)
    for group, dag_id, task_id in affected:
        dags[group].add(dag_id)
        tasks[group].add(f"{dag_id}.{task_id}")
    rows = []
    for group, failures, dag_count, first, last in groups:
        example = examples[group]
        rows.append(
            (
                headline(example.error) if group else NO_ERROR,
                failures,
                dag_count,
                len(tasks[group]),
                _names(dags[group]),
                _names(tasks[group]),
                first,
                last,
                example.dag_id,
                example.run_id,
                example.task_id,
                example.map_index,
                example.try_number,
                example.error or "",
                example.log_path,
                group,
            )
        )
    return frame(rows, COLUMNS)


def _failed_between(since: datetime, now: datetime) -> Any:
    """Tries that failed in [since, now]; with the signature, DAG and task, all in
    `ix_task_try_end_date_state_error_signature_dag_id_task_id`."""
    return and_(TaskTry.end_date >= since, TaskTry.end_date <= now, TaskTry.state.in_(FAILED_TRIES))


def _names(names: set[str]) -> str:
    shown = sorted(names)[:NAMED]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def summary(store: Store, window: str = "24 h", *, now: datetime | None = None) -> dict[str, int]:
    """The page's headline for the window: failed tries, distinct signatures, DAGs hit."""
    now = utcnow(now)
    query = select(
        func.count(),
        func.count(func.distinct(func.coalesce(TaskTry.error_signature, ""))),
        func.count(func.distinct(TaskTry.dag_id)),
    ).where(_failed_between(now - WINDOWS[window], now))
    with store.session(readonly=True) as session:
        failures, signatures, dags = session.execute(query).one()
    return {"failures": failures, "signatures": signatures, "dags": dags}
