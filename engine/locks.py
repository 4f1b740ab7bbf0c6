"""One scheduler per metastore: a file lock on SQLite, an advisory lock on PostgreSQL.

The lock is held for the scheduler's lifetime and released by the operating system or
the database when the process dies, so a crashed scheduler never blocks its successor.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import text

from engine.exceptions import DagwatchError

#: Key of the PostgreSQL advisory lock ("dagwatch" in ASCII, as a bigint).
PG_LOCK_KEY = 0x64616777617463


class SchedulerAlreadyRunning(DagwatchError):
    """Another scheduler is already running against this metastore."""


@contextlib.contextmanager
def scheduler_lock(store: Any) -> Iterator[None]:
    """Hold the single-scheduler lock, or raise SchedulerAlreadyRunning."""
    if store.dialect == "sqlite":
        with _file_lock(Path(store.engine.url.database or "dagwatch.db")):
            yield
    else:
        with _advisory_lock(store):
            yield


@contextlib.contextmanager
def _file_lock(database: Path) -> Iterator[None]:
    path = database.with_name(database.name + ".scheduler.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise SchedulerAlreadyRunning(
            f"another scheduler (pid {holder}) is already running against {database}; "
            "only one scheduler may run on SQLite"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def _advisory_lock(store: Any) -> Iterator[None]:
    connection = store.engine.connect()
    try:
        locked = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": PG_LOCK_KEY}
        ).scalar()
        connection.commit()
        if not locked:
            raise SchedulerAlreadyRunning(
                f"another scheduler is already running against {store.display_url}"
            )
        yield
    finally:
        connection.close()  # ends the session, which releases the lock
