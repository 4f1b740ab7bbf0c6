"""The task API on the metastore: what `engine.sdk.task_api.TaskAPI` promises, read and
written with the store of this process.

Variables and Connections come from the secrets backends first (`secrets.backends`), then
from the metastore, as before. Without a store given, each call uses the process's
(`engine.runtime.get_store()`), so a test or a CLI verb that configures another metastore
is followed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine import runtime
from engine.exceptions import NotFound
from engine.sdk.task_api import DagInfo, RunRef, TaskInstanceKey, VariableValue

if TYPE_CHECKING:
    from engine.config import Config
    from engine.sdk.connections import Connection
    from engine.store.db import Store
    from engine.store.models import DagRun


def _ref(run: DagRun) -> RunRef:
    from engine.sdk.schedules import coerce_utc

    return RunRef(run.dag_id, run.run_id, coerce_utc(run.logical_date), run.state)


class MetastoreTaskAPI:
    """`TaskAPI` over the metastore (and the secrets backends, for Variables and
    Connections)."""

    def __init__(self, store: Store | None = None, config: Config | None = None) -> None:
        self._store = store
        self._config = config

    @property
    def store(self) -> Store:
        return self._store if self._store is not None else runtime.get_store()

    @property
    def config(self) -> Config:
        return self._config if self._config is not None else runtime.get_config()

    # -- Variables and Connections ------------------------------------------------------

    def get_variable(self, key: str) -> VariableValue | None:
        from engine import secrets_backends
        from engine.store import variables  # sqlalchemy only when used

        value, is_secret, _ = secrets_backends.find_variable(self.config, key)
        if value is not None:
            return VariableValue(value, is_secret)
        with self.store.session(readonly=True) as session:
            record = variables.get_variable(session, key, config=self.config)
        return None if record is None else VariableValue(record.value, record.is_secret)

    def set_variable(
        self, key: str, value: str, *, description: str | None, is_secret: bool
    ) -> None:
        from engine.store import variables

        with self.store.session() as session:
            variables.set_variable(
                session, key, value, description=description, is_secret=is_secret,
                config=self.config,
            )  # fmt: skip

    def delete_variable(self, key: str) -> int:
        from engine.store import variables

        with self.store.session() as session:
            return int(variables.delete_variable(session, key))

    def get_connection(self, conn_id: str) -> Connection | None:
        from engine import secrets_backends
        from engine.sdk.connections import Connection
        from engine.store import connections

        connection = secrets_backends.find_connection(self.config, conn_id)
        if connection is not None:
            return connection
        with self.store.session(readonly=True) as session:
            record = connections.get_connection(session, conn_id, config=self.config)
        return None if record is None else Connection(**asdict(record))

    # -- XComs -------------------------------------------------------------------------

    def set_xcom(self, ti: TaskInstanceKey, key: str, value: Any) -> None:
        from engine.store import runs

        with self.store.session() as session:
            runs.set_xcom(
                session, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, key=key,
                value=value, now=datetime.now(UTC), map_index=ti.map_index,
            )  # fmt: skip

    def get_xcoms(
        self, ti: TaskInstanceKey, task_ids: Sequence[str], key: str, map_index: int | None
    ) -> dict[str, Any]:
        from engine.store import runs

        with self.store.session() as session:
            return runs.get_xcoms(
                session, dag_id=ti.dag_id, run_id=ti.run_id, task_ids=task_ids, key=key,
                map_index=map_index,
            )  # fmt: skip

    # -- other runs ---------------------------------------------------------------------

    def previous_logical_date(self, dag_id: str, before: datetime, state: str) -> datetime | None:
        from engine.store import runs

        with self.store.session() as session:
            return runs.previous_logical_date(session, dag_id, before, state)

    def trigger_dag(
        self,
        dag_id: str,
        *,
        run_id: str,
        logical_date: datetime,
        conf: Mapping[str, Any] | None,
        actor: str,
    ) -> RunRef:
        from engine import api

        run = api.trigger_dag(
            self.store, dag_id, conf=conf, logical_date=logical_date, run_id=run_id, actor=actor
        )
        return _ref(run)

    def find_run(self, dag_id: str, run_id: str, logical_date: datetime) -> RunRef | None:
        from engine.store import runs

        with self.store.session(readonly=True) as session:
            try:
                return _ref(runs.get_dag_run(session, dag_id, run_id))
            except NotFound:
                run = runs.find_dag_run_by_date(session, dag_id, logical_date)
                return None if run is None else _ref(run)

    def clear_run(self, dag_id: str, run_id: str, *, actor: str) -> list[str]:
        from engine import api

        result = api.clear_task_instances(self.store, dag_id, run_id=run_id, actor=actor)
        return [
            f"task {ref.task_id} of run {ref.run_id} not cleared: {ref.reason}"
            for ref in result.left_running
        ]

    def run_state(self, dag_id: str, run_id: str) -> str:
        from engine import api

        return api.dag_run_state(self.store, dag_id, run_id).value

    def dag_info(self, dag_id: str) -> DagInfo:
        from engine.parsing.serialization import SerializedDAG
        from engine.store import dags

        with self.store.session(readonly=True) as session:
            found = dags.serialized_dag_and_active(session, dag_id)
        if found is None:
            return DagInfo(exists=False, active=False)
        serialized, active = found
        plan = SerializedDAG.from_dict(serialized)
        groups = {
            group_id: list(group.get("task_ids") or [])
            for group_id, group in plan.task_groups.items()
        }
        return DagInfo(True, active, frozenset(plan.task_dict), groups)

    def task_states(
        self, dag_id: str, task_ids: Sequence[str] | None, dates: Sequence[datetime]
    ) -> dict[str, list[tuple[str, str]]]:
        from engine.store import runs

        with self.store.session(readonly=True) as session:
            return runs.states_at_dates(session, dag_id, task_ids, dates)
