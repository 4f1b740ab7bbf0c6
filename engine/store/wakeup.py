"""Wake an idle scheduler when another process writes, instead of waiting out its sleep.

A trigger from the CLI or the console should start a run in milliseconds, not at the
next `scheduler.loop_interval`. SQLite tells a connection when any other connection
has committed (`PRAGMA data_version`), which costs microseconds to poll; PostgreSQL
delivers `NOTIFY dagwatch_scheduler`, sent by the engine API with each action.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from engine.store.db import Store

log = logging.getLogger(__name__)

CHANNEL = "dagwatch_scheduler"
#: How often an idle SQLite scheduler looks for a commit by another process.
SQLITE_POLL_SECONDS = 0.02
#: How long a PostgreSQL wait blocks before it looks at the stop event again.
NOTIFY_SLICE_SECONDS = 0.1


def notify_scheduler(session: Session) -> None:
    """Ask an idle scheduler to tick now (PostgreSQL: delivered at commit)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))


class ChangeWatcher:
    """Sleeps until another process commits, `stop` is set, or the timeout passes."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._connection: Any = None
        self._last_version: int | None = None

    def _open(self) -> Any:
        if self._connection is None:
            pooled = self._store.engine.raw_connection()
            # the driver's own connection (psycopg's or sqlite3's)
            connection: Any = pooled.dbapi_connection
            # Its own connection, never returned to the pool: LISTEN and autocommit must not
            # leak into the sessions that later borrow pooled connections.
            pooled.detach()
            if self._store.dialect == "postgresql":
                connection.autocommit = True
                connection.execute(f"LISTEN {CHANNEL}")
            else:  # what it has seen: any later commit elsewhere wakes a wait
                self._last_version = _data_version(connection)
            self._connection = connection
        return self._connection

    def prime(self) -> None:
        """Start watching now, before the loop's first tick, so a change made before the
        first wait (a trigger right after start-up) wakes it."""
        try:
            self._open()
        except Exception as exc:  # the first wait tries again, or falls back to sleep
            log.warning("change watcher failed to start: %s", exc)
            self.close()

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """True when a change woke it; False on timeout or stop."""
        try:
            connection = self._open()
            if self._store.dialect == "postgresql":
                return self._wait_notify(connection, timeout, stop)
            return self._wait_sqlite(connection, timeout, stop)
        except Exception as exc:  # a broken watcher must not stop the loop: fall back to sleep
            log.warning("change watcher failed, sleeping instead: %s", exc)
            self.close()
            stop.wait(timeout)
            return False

    def _wait_sqlite(self, connection: Any, timeout: float, stop: threading.Event) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            version = _data_version(connection)
            if version != self._last_version:
                self._last_version = version
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop.wait(min(SQLITE_POLL_SECONDS, remaining)):
                return False

    def _wait_notify(self, connection: Any, timeout: float, stop: threading.Event) -> bool:
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            slice_ = min(NOTIFY_SLICE_SECONDS, remaining)
            if any(True for _ in connection.notifies(timeout=slice_, stop_after=1)):
                for _ in connection.notifies(timeout=0.001):  # take every pending one now
                    pass
                return True
        return False

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None


def _data_version(connection: Any) -> int:
    """SQLite's count of commits by other connections, as this one has seen them."""
    cursor = connection.cursor()
    try:
        version: int = cursor.execute("PRAGMA data_version").fetchone()[0]
        return version
    finally:
        cursor.close()
