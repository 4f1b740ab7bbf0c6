"""A queue for SQLite writers: a file lock taken before BEGIN IMMEDIATE.

SQLite lets one writer in at a time; the others wait in its busy handler, which polls
with growing sleeps (up to 100 ms apart). With dozens of attempt processes writing at
once, the write lock sits free while every waiter sleeps, and a newcomer can jump the
queue. Waiting on `flock` instead puts the waiters to sleep in the kernel, which wakes
one the moment the holder commits or rolls back; a waiter uses no CPU meanwhile.

The gate is advisory and ours alone: another program writing the same file is still
kept out by SQLite's own lock, as before. Each write transaction opens the lock file
anew and closes it when it ends, so a lock never outlives its transaction through a
descriptor shared with a connection, a helper thread or a forked child. The gate never
turns a mistake into a hang: a thread that already holds the gate and begins a write on
a second connection does not wait for it (it would wait for itself), and a writer that
waited `WAIT_LIMIT` seconds goes on without it, to SQLite's busy handler and its timeout.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

#: Seconds a writer waits for the gate before it goes on to SQLite's own lock.
WAIT_LIMIT = 30.0
#: Where a pooled connection's record keeps the path of its database's lock file.
_PATH_KEY = "dagwatch_write_gate"
#: The gate held by each DBAPI connection in a write transaction, by id() (sqlite3
#: connections take no weakref); an entry lives from BEGIN to COMMIT or ROLLBACK.
_holds: dict[int, _Hold] = {}
_thread = threading.local()  #: the hold of this thread, if any


class _Hold:
    """The gate, held through one descriptor of the lock file that no one else uses."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pid = os.getpid()
        self.open = True

    def end(self) -> None:
        if not self.open:
            return
        self.open = False
        if self.pid == os.getpid():  # a forked child must not unlock its parent's gate
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class _Waiter:
    """Waits for the gate on a helper thread, because `flock` has no timeout.

    The descriptor belongs to the waiter until it hands it over: to the caller once the
    lock is taken in time, or, if the caller gave up first, nobody (the waiter unlocks
    and closes it the moment the lock comes).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.handoff = threading.Lock()
        self.done = threading.Event()
        self.taken = False
        self.abandoned = False

    def run(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            taken = True
        except OSError as exc:
            log.warning("cannot wait for the metastore's write gate: %s", exc)
            taken = False
        with self.handoff:
            self.taken = taken
            self.done.set()
            if self.abandoned:
                if taken:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)

    def wait(self, limit: float) -> bool:
        """True once the lock is taken; False (and the descriptor is not ours) if not."""
        threading.Thread(target=self.run, name="dagwatch-write-gate", daemon=True).start()
        self.done.wait(limit)
        with self.handoff:
            if self.done.is_set():
                if not self.taken:
                    os.close(self.fd)
                return self.taken
            self.abandoned = True
            return False


def install(engine: Engine, database: str) -> None:
    """Queue the write transactions of `engine`, a file database at `database`: a BEGIN
    IMMEDIATE calls `acquire` first; COMMIT, ROLLBACK and closing the connection release
    the gate."""
    path = f"{database}-writelock"

    def on_connect(_dbapi_connection: Any, record: Any) -> None:
        record.info[_PATH_KEY] = path

    def on_close(dbapi_connection: Any, _record: Any = None) -> None:
        release(dbapi_connection)  # e.g. invalidated in the middle of a transaction

    event.listen(engine, "connect", on_connect)
    event.listen(engine.pool, "close", on_close)
    event.listen(engine.pool, "close_detached", on_close)
    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(connection: Any) -> None:
        try:
            commit(connection)
        finally:
            release(connection)

    def do_rollback(connection: Any) -> None:
        try:
            rollback(connection)
        finally:
            release(connection)

    # SQLAlchemy has no event after a COMMIT (its `commit` event fires before it), and
    # releasing before the COMMIT would send the next writer into SQLite's busy handler.
    dialect.do_commit = do_commit  # type: ignore[assignment]
    dialect.do_rollback = do_rollback  # type: ignore[assignment]


def acquire(connection: Any) -> None:
    """Wait for the gate before a write transaction begins on `connection`, the pool's
    proxy of a DBAPI connection of an engine given to `install`."""
    path = connection.info.get(_PATH_KEY)
    key = id(connection.dbapi_connection)
    if path is None or key in _holds:
        return
    mine = getattr(_thread, "hold", None)
    if mine is not None and mine.open and mine.pid == os.getpid():
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:  # e.g. a read-only folder: SQLite's own lock still works
        log.debug("no write gate at %s: %s", path, exc)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if not _Waiter(fd).wait(WAIT_LIMIT):
            log.warning(
                "waited %g s for the metastore's write gate (%s); going on to SQLite's own lock",
                WAIT_LIMIT,
                path,
            )
            return
    except OSError as exc:  # e.g. a file system without flock: the same
        os.close(fd)
        log.debug("no write gate at %s: %s", path, exc)
        return
    hold = _holds[key] = _Hold(fd)
    _thread.hold = hold


def release(connection: Any) -> None:
    """Let the next writer in (a no-op unless `connection` holds the gate); `connection`
    is a DBAPI connection or the pool's proxy of one."""
    hold = _holds.pop(id(getattr(connection, "dbapi_connection", connection)), None)
    if hold is not None:
        hold.end()
