"""One scheduler per SQLite metastore: a file lock. PostgreSQL allows several.

The lock is held for the scheduler's lifetime and released by the operating system when
the process dies, so a crashed scheduler never blocks its successor. Several schedulers
on one PostgreSQL share the work through row and advisory locks
(`engine.store.coordination`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from engine.exceptions import DagwatchError

if TYPE_CHECKING:
    from engine.store.db import Store


class SchedulerAlreadyRunning(DagwatchError):
    """Another scheduler is already running against this metastore."""


@contextlib.contextmanager
def scheduler_lock(store: Store) -> Iterator[None]:
    """Hold the single-scheduler lock on SQLite, or raise SchedulerAlreadyRunning."""
    if store.dialect == "sqlite":
        with _file_lock(Path(store.engine.url.database or "dagwatch.db")):
            yield
    else:  # several schedulers share a PostgreSQL metastore
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
            "only one scheduler may run on SQLite (use PostgreSQL to run several)"
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
