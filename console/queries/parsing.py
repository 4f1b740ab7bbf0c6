"""DAG parsing: parse time and DAGs per file, files not checked recently, import errors.

The DAG processor reads every file's content hash on each pass (its job heartbeats after
each pass) and imports only new or changed files: a file's `last_parsed` is when its
current content was imported, and it is current as of the processor's last pass. A file
is "not parsed recently" when neither happened within N x `scheduler.min_file_process_interval`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import func, select

from console.queries.common import frame, seconds_between, utcnow
from engine.store.db import Store
from engine.store.models import DagFile, ImportError_, Job

FILE_COLUMNS = (
    "fileloc",
    "parse_duration_s",
    "dag_count",
    "task_count",
    "last_parsed",
    "checked_age_s",
    "stale",
    "has_import_error",
    "timed_out",
)


@dataclass(frozen=True)
class ParseFiles:
    """The files, slowest to parse first, and what the page says above them."""

    files: pd.DataFrame
    total_files: int
    total_parse_s: float
    stale_files: int
    last_pass: datetime | None  #: the DAG processor's last pass (None: never ran)
    stale_after_s: float


def files(
    store: Store,
    *,
    interval_s: float,
    intervals: int = 3,
    now: datetime | None = None,
    limit: int = 200,
) -> ParseFiles:
    """Per file: parse time, DAGs and tasks, when parsed; stale when not checked within
    `intervals` x `interval_s` (the DAG processor's pass interval)."""
    now = utcnow(now)
    stale_after = max(1.0, intervals * interval_s)
    with store.session(readonly=True) as session:
        last_pass = session.execute(
            select(func.max(Job.latest_heartbeat)).where(Job.job_type == "dag_processor")
        ).scalar_one_or_none()
        total, total_parse = session.execute(
            select(func.count(), func.coalesce(func.sum(DagFile.parse_duration), 0.0))
        ).one()
        rows = session.execute(
            select(
                DagFile.fileloc,
                DagFile.parse_duration,
                DagFile.dag_count,
                DagFile.task_count,
                DagFile.last_parsed,
                DagFile.has_import_error,
                DagFile.timed_out,
            )
            .order_by(DagFile.parse_duration.desc(), DagFile.fileloc)
            .limit(limit)
        ).all()
        cutoff = now.timestamp() - stale_after
        stale_count = 0
        if last_pass is None or last_pass.timestamp() < cutoff:
            stale_count = session.execute(
                select(func.count()).where(
                    DagFile.last_parsed < datetime.fromtimestamp(cutoff, now.tzinfo)
                )
            ).scalar_one()
    table = []
    for fileloc, duration, dags, tasks, parsed, broken, timed_out in rows:
        checked = max(parsed, last_pass) if last_pass else parsed
        age = seconds_between(now, checked)
        stale = age is not None and age > stale_after
        table.append((fileloc, duration, dags, tasks, parsed, age, stale, broken, timed_out))
    return ParseFiles(
        frame(table, FILE_COLUMNS), total, float(total_parse), stale_count, last_pass, stale_after
    )


def import_errors(store: Store, *, limit: int = 100) -> pd.DataFrame:
    """Broken DAG files, the most recently seen first: the error's last line, the whole
    traceback, when first and last found broken."""
    query = (
        select(
            ImportError_.filename,
            ImportError_.first_seen,
            ImportError_.timestamp,
            ImportError_.stacktrace,
        )
        .order_by(ImportError_.timestamp.desc())
        .limit(limit)
    )
    with store.session(readonly=True) as session:
        rows = [
            (name, first or last, last, (trace.strip().splitlines() or [""])[-1], trace)
            for name, first, last, trace in session.execute(query)
        ]
    return frame(rows, ("filename", "first_seen", "last_seen", "error", "stacktrace"))
