"""A no-op attempt run only to warm caches up: once in the fork server, once per worker.

The first attempt in a process pays for configuring the SQLAlchemy mappers, filling the
lazily built ORM, logging and templating structures, and compiling each statement into
its engine's cache. The fork server (`engine.execution.forkserver`) runs the attempt
against a throwaway in-memory metastore, so every process forked from it starts with the
process-wide structures built (and shares their pages). A local-executor worker runs it
again with its own engine on the real metastore, inside one transaction that is rolled
back: nothing is written, and the statements an attempt runs are compiled in the cache
that every attempt forked from that worker inherits.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from engine.config import Config
from engine.store.db import committing

DAG_ID = "dagwatch_warm_up"
_TO_QUEUED = (("none", "scheduled"), ("scheduled", "queued"))


def run_warm_up_attempt(store: Any, config: Config) -> None:
    """Queue the one task of a fresh run and run its attempt (it pushes an XCom)."""
    from engine import DAG, PythonOperator
    from engine.execution import runner
    from engine.execution.attempt import hostname
    from engine.parsing.serialization import serialize_dag
    from engine.states import DagRunState, TaskState
    from engine.store import runs, transitions

    with DAG(DAG_ID, schedule=None) as dag:
        PythonOperator(task_id="noop", python_callable=lambda: "warm")
    now = datetime.now(UTC)
    run_id = f"warm_up_{os.getpid()}"
    with store.session() as session:
        runs.create_dag_run(
            session, serialize_dag(dag), run_id=run_id, run_type="manual",
            logical_date=now, data_interval=None, conf=None,
            state=DagRunState.RUNNING, now=now,
        )  # fmt: skip
        session.flush()
        (ti,) = runs.get_task_instances(session, DAG_ID, run_id)
        for before, after in _TO_QUEUED:
            transitions.transition_task_instance(
                session, ti.id, expected=TaskState(before), to=TaskState(after), at=now
            )
        ti_id = ti.id
    runner.run_attempt(store, config, dag, ti_id, hostname=hostname())
    with store.session() as session:
        runs.heartbeat(session, ti_id, now)


def in_memory() -> None:
    """The fork server's warm-up: an in-memory metastore, thrown away afterwards."""
    from sqlalchemy.orm import configure_mappers

    from engine.config import load_config
    from engine.execution.attempt import hostname
    from engine.store.db import Store
    from engine.store.models import Base

    configure_mappers()
    hostname()
    with tempfile.TemporaryDirectory(prefix="dagwatch-warm-up-") as home:
        config = load_config({}, home=Path(home))
        store = Store("sqlite://")
        try:
            Base.metadata.create_all(store.engine)
            run_warm_up_attempt(store, config)
        finally:
            store.dispose()


class _JoinedStore:
    """Quacks like a Store for the runner: each session is a savepoint of one transaction."""

    def __init__(self, store: Any, connection: Connection) -> None:
        self.engine = store.engine
        self.dialect = store.dialect
        self._sessions = sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        with committing(self._sessions) as session:
            yield session


def rolled_back(store: Any, config: Config) -> None:
    """Warm `store`'s own engine on the real metastore, writing nothing (logs go to a
    temporary folder). On SQLite this holds the write lock for the few milliseconds the
    attempt takes; on PostgreSQL it may leave gaps in the id sequences."""
    with tempfile.TemporaryDirectory(prefix="dagwatch-warm-up-") as logs:
        config = config.with_overrides(logging__base_log_folder=logs)
        with store.engine.connect() as connection:
            transaction = connection.begin()
            try:
                run_warm_up_attempt(_JoinedStore(store, connection), config)
            finally:
                transaction.rollback()
