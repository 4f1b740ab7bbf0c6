"""What a task reads and writes at run time, behind one interface.

A DAG file and the tasks it defines never open the metastore themselves: Variables,
Connections, XComs and the cross-DAG operators' reads and triggers of
other runs all go through the `TaskAPI` of the process (as Airflow 3's Task SDK goes
through its Task Execution Interface). The engine installs the implementation that reads
the metastore (`engine.execution.task_api.MetastoreTaskAPI`); another one, talking to an
API server say, can run tasks where the metastore is not reachable, and a test can install
a fake.

Without an installed one, the first use builds the default the `engine` package names
(`engine.default_task_api`), so `Variable.get` works in a plain script too.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.sdk.connections import Connection


@dataclass(frozen=True)
class TaskInstanceKey:
    """Which task instance (and try) an XCom or a rendered field belongs to."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int = 0


@dataclass(frozen=True)
class RunRef:
    """A DAG run as a task sees it: enough to name it, wait for it and link to it."""

    dag_id: str
    run_id: str
    logical_date: datetime
    state: str


@dataclass(frozen=True)
class DagInfo:
    """What a sensor needs to know of another DAG: whether it exists and is active, its
    task ids, and the task ids of each of its task groups."""

    exists: bool
    active: bool
    task_ids: frozenset[str] = frozenset()
    task_groups: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class VariableValue:
    value: str
    is_secret: bool


class TaskAPI(Protocol):
    """Everything a running task (or a DAG file being parsed) may ask of the engine."""

    # Variables and Connections: secrets backends first, then the metastore
    def get_variable(self, key: str) -> VariableValue | None: ...

    def set_variable(
        self, key: str, value: str, *, description: str | None, is_secret: bool
    ) -> None: ...

    def delete_variable(self, key: str) -> int: ...

    def get_connection(self, conn_id: str) -> Connection | None: ...

    # XComs
    def set_xcom(self, ti: TaskInstanceKey, key: str, value: Any) -> None: ...

    def get_xcoms(
        self, ti: TaskInstanceKey, task_ids: Sequence[str], key: str, map_index: int | None
    ) -> dict[str, Any]: ...

    # Other runs (cross-DAG operators, Airflow 2's prev_execution_date_success)
    def previous_logical_date(
        self, dag_id: str, before: datetime, state: str
    ) -> datetime | None: ...

    def trigger_dag(
        self,
        dag_id: str,
        *,
        run_id: str,
        logical_date: datetime,
        conf: Mapping[str, Any] | None,
        actor: str,
    ) -> RunRef: ...

    def find_run(self, dag_id: str, run_id: str, logical_date: datetime) -> RunRef | None: ...

    def clear_run(self, dag_id: str, run_id: str, *, actor: str) -> list[str]: ...

    def run_state(self, dag_id: str, run_id: str) -> str: ...

    def dag_info(self, dag_id: str) -> DagInfo: ...

    def task_states(
        self, dag_id: str, task_ids: Sequence[str] | None, dates: Sequence[datetime]
    ) -> dict[str, list[tuple[str, str]]]: ...


_lock = threading.Lock()
_current: TaskAPI | None = None


def install(api: TaskAPI | None) -> None:
    """Make `api` the process's task API (None: build the default again on next use)."""
    global _current
    with _lock:
        _current = api


def current() -> TaskAPI:
    """The process's task API, building the default on first use."""
    global _current
    with _lock:
        if _current is None:
            import engine

            _current = engine.default_task_api()
        return _current
