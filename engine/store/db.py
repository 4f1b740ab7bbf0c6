"""The metastore connection: one `Store` per process and database URL.

SQLite is tuned for a scheduler, its attempt processes and the CLI writing at once (WAL,
a busy timeout, `BEGIN IMMEDIATE` so a write transaction takes the write lock up front
instead of failing with "database is locked" when it upgrades from reading, and writers
queued on a file lock, `engine.store.write_gate`). PostgreSQL goes through psycopg 3.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, CursorResult, Engine, Result, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from engine.config import _mask_url
from engine.exceptions import StoreError
from engine.store import write_gate
from engine.store.transitions import guard_state_writes

if TYPE_CHECKING:
    from engine.config import Config

log = logging.getLogger(__name__)

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
    "PRAGMA synchronous=NORMAL",
)
#: Execution option naming the BEGIN that a SQLite transaction starts with.
SQLITE_BEGIN_OPTION = "dagwatch_sqlite_begin"
_SUPPORTED = ("sqlite", "postgresql")
_MISSING_TABLE = re.compile(r"no such table: |relation \"[^\"]+\" does not exist")


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return _mask_url(url)


def normalize_url(raw: str) -> URL:
    """Parse a metastore URL; `postgresql://` and `postgres://` mean psycopg 3."""
    try:
        url = make_url(raw.strip())
    except ArgumentError:
        raise StoreError(
            f"database.sql_alchemy_conn = {_mask_url(raw)!r} is not a valid SQLAlchemy URL; "
            "expected sqlite:///path/to/file.db or postgresql+psycopg://user:pw@host/db"
        ) from None
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in _SUPPORTED:
        raise StoreError(
            f"database.sql_alchemy_conn = {mask_url(url)!r}: unsupported database "
            f"{url.get_backend_name()!r}; use sqlite or postgresql"
        )
    return url


class Store:
    """An engine plus session factories for one metastore URL."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.dialect: str = self.url.get_backend_name()
        try:
            self.engine: Engine = (
                self._sqlite_engine() if self.dialect == "sqlite" else self._postgres_engine()
            )
        except (ArgumentError, NoSuchModuleError) as exc:
            raise StoreError(f"cannot use the metastore at {self.display_url}: {exc}") from None
        event.listen(self.engine, "handle_error", self._on_error)
        event.listen(self.engine, "connect", _remember_pid)
        event.listen(self.engine, "checkout", _refuse_inherited_connection)
        self._sessions = sessionmaker(bind=self.engine, expire_on_commit=False)
        read_engine = self.engine.execution_options(**{SQLITE_BEGIN_OPTION: "BEGIN"})
        self._read_sessions = sessionmaker(bind=read_engine, expire_on_commit=False)
        for factory in (self._sessions, self._read_sessions):
            event.listen(factory, "before_flush", guard_state_writes)

    @classmethod
    def from_config(cls, config: Config) -> Store:
        """The store named by `database.sql_alchemy_conn`."""
        return cls(config.get("database.sql_alchemy_conn"))

    @property
    def display_url(self) -> str:
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"

    def _sqlite_engine(self) -> Engine:
        database = self.url.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if not in_memory:
            folder = Path(database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {folder} for {self.display_url}: {exc}") from None
        # A file database gets a real pool; an in-memory one keeps SQLAlchemy's default
        # (one connection per thread), since each new connection would be a new database.
        kwargs: dict[str, Any] = {} if in_memory else {"poolclass": QueuePool}
        engine = create_engine(self.url, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        if not in_memory:
            write_gate.install(engine, str(Path(database).expanduser()))
        return engine

    def _postgres_engine(self) -> Engine:
        # No pre-ping on every checkout: it is one more round trip per transaction, and a
        # round trip is what a scheduler tick and an attempt pay most for on PostgreSQL
        # (each one is a sleep and a wake-up of two processes). A connection is pinged
        # only after it idled in the pool (`_ping_after_idle`), when the server may have
        # dropped it; a connection that fails in use invalidates the pool.
        engine = create_engine(
            self.url,
            connect_args={"connect_timeout": 10, "application_name": "dagwatch"},
        )
        event.listen(engine, "checkin", _note_checkin)
        event.listen(engine, "checkout", _ping_after_idle)
        return engine

    def _on_error(self, context: Any) -> None:
        original = context.original_exception
        # `connection` is None only when the error happened while connecting.
        if context.connection is None and not context.is_pre_ping:
            raise StoreError(
                f"cannot connect to the metastore at {self.display_url}: {_first_line(original)}"
            ) from original
        if _MISSING_TABLE.search(str(original)):
            raise StoreError(
                f"the metastore at {self.display_url} is not migrated ({_first_line(original)}): "
                "run `dagwatch db migrate`"
            ) from original

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A session that commits when the block succeeds and rolls back when it raises.

        On SQLite a write session begins with BEGIN IMMEDIATE (the write lock is taken, and
        waited for, up front); `readonly=True` uses a plain BEGIN so readers never queue
        behind writers.
        """
        with committing(self._read_sessions if readonly else self._sessions) as session:
            yield session

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A Core connection in a transaction (migrations, maintenance)."""
        with self.engine.begin() as connection:
            yield connection

    def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self, close: bool = True) -> None:
        """Drop every pooled connection; `close=False` in a forked child leaves the parent's."""
        self.engine.dispose(close=close)


def affected_rows(result: Result[*tuple[Any, ...]]) -> int:
    """The rows an UPDATE or DELETE run with `Session.execute` matched.

    A DML statement's result is a CursorResult, which `Session.execute` is not typed to say."""
    return cast(CursorResult[*tuple[Any, ...]], result).rowcount


@contextmanager
def committing(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session from `factory` that commits when the block succeeds, rolls back when it
    raises, and is closed either way."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def upsert_insert(session: Session, model: type[Any]) -> Any:
    """An INSERT for `model` with the dialect's ON CONFLICT clauses (SQLite or PostgreSQL)."""
    # the dialect's module is imported by the engine that uses it: a SQLite process
    # never imports the PostgreSQL dialect (nor the reverse)
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(model)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(model)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _remember_pid(_dbapi_connection: Any, record: Any) -> None:
    record.info["pid"] = os.getpid()


def _refuse_inherited_connection(_dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A pooled connection inherited through fork() is never used by the child (SQLAlchemy's
    documented recipe): the pool discards it and connects afresh."""
    if record.info.get("pid") != os.getpid():
        record.dbapi_connection = proxy.dbapi_connection = None
        raise DisconnectionError("connection belongs to another process; reconnecting")


#: Seconds a pooled PostgreSQL connection may idle before its next checkout pings it.
PING_AFTER_IDLE = 10.0


def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info["idle_since"] = time.monotonic()


def _ping_after_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Pessimistic disconnect handling, for connections that idled: a dead one is replaced
    (SQLAlchemy's documented checkout recipe) before a transaction starts on it."""
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        dbapi_connection.rollback()  # the ping's implicit transaction
    except Exception as exc:
        raise DisconnectionError(f"pooled connection is gone: {_first_line(exc)}") from exc


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module: it does not BEGIN before
    # SELECT or DDL. `_sqlite_on_begin` emits BEGIN itself (SQLAlchemy's documented recipe).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    statement = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "BEGIN IMMEDIATE")
    if statement == "BEGIN":  # a reader: WAL lets it in beside the writer
        connection.exec_driver_sql(statement)
        return
    write_gate.acquire(connection.connection)
    try:
        connection.exec_driver_sql(statement)
    except BaseException:  # no transaction began, so no COMMIT or ROLLBACK will release it
        write_gate.release(connection.connection)
        raise
