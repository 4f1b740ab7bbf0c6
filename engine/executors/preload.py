"""Imported by the forkserver's server only: do once what every attempt child would repeat.

Importing this module runs one no-op attempt against a throwaway in-memory SQLite
metastore. That configures the SQLAlchemy mappers and fills the lazily built ORM and
compiler structures, the logging and templating set-up, so a forked attempt starts with
them in memory instead of spending tens of milliseconds on them. Failures are logged
and ignored: a cold child is slower, not wrong.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)
_TO_QUEUED = (("none", "scheduled"), ("scheduled", "queued"))


def warm_up_attempt() -> None:
    """Run an EmptyOperator attempt from queued to success in an in-memory metastore."""
    from sqlalchemy.orm import configure_mappers

    from engine import DAG, EmptyOperator, runner
    from engine.config import load_config
    from engine.executors.attempt import hostname
    from engine.serialization import serialize_dag
    from engine.states import DagRunState, TaskState
    from engine.store import runs, transitions
    from engine.store.db import Store
    from engine.store.models import Base

    configure_mappers()
    hostname()
    with tempfile.TemporaryDirectory(prefix="dagwatch-warm-up-") as home:
        config = load_config({}, home=Path(home))
        store = Store("sqlite://")
        try:
            Base.metadata.create_all(store.engine)
            with DAG("dagwatch_warm_up", schedule=None) as dag:
                EmptyOperator(task_id="noop")
            now = datetime.now(UTC)
            with store.session() as session:
                runs.create_dag_run(
                    session, serialize_dag(dag), run_id="warm_up", run_type="manual",
                    logical_date=now, data_interval=None, conf=None,
                    state=DagRunState.RUNNING, now=now,
                )  # fmt: skip
                session.flush()
                (ti,) = runs.get_task_instances(session, "dagwatch_warm_up", "warm_up")
                for before, after in _TO_QUEUED:
                    transitions.transition_task_instance(
                        session, ti.id, expected=TaskState(before), to=TaskState(after), at=now
                    )
                ti_id = ti.id
            runner.run_attempt(store, config, dag, ti_id, hostname=hostname())
            with store.session() as session:
                runs.heartbeat(session, ti_id, now)
        finally:
            store.dispose()


try:
    warm_up_attempt()
except Exception as exc:  # the forkserver must start even if this fails
    log.warning("forkserver warm-up attempt failed: %s", exc)
