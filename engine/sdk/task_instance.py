"""The `ti` a running task sees in its context: identity, XCom access, skip requests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.exceptions import TaskError
from engine.sdk.task_api import TaskAPI, TaskInstanceKey


@dataclass
class RuntimeTaskInstance:
    """One attempt's view of its task instance; XComs go through the task API."""

    api: TaskAPI
    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    max_tries: int
    hostname: str
    log_path: Path
    map_index: int = -1
    task: Any = None
    skipped_task_ids: set[str] = field(default_factory=set)
    #: when this try began: for a sensor in reschedule mode, its first poke (as in Airflow)
    start_date: datetime | None = None
    #: how often this try was rescheduled so far (a sensor's earlier pokes in this try)
    reschedule_count: int = 0
    #: the template fields as rendered (masked), recorded with the attempt's outcome
    rendered_fields: dict[str, str] | None = None

    def xcom_push(self, key: str, value: Any) -> None:
        """Store `value` (JSON-serializable) under `key` for downstream tasks."""
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TaskError(
                f"task {self.task_id!r}: XCom {key!r} is not JSON-serializable: {exc}"
            ) from None
        self.api.set_xcom(self.key, key, value)

    @property
    def key(self) -> TaskInstanceKey:
        return TaskInstanceKey(
            self.dag_id, self.run_id, self.task_id, self.map_index, self.try_number
        )

    def xcom_pull(
        self,
        task_ids: str | Iterable[str] | None = None,
        key: str = "return_value",
        default: Any = None,
        run_id: str | None = None,
        map_indexes: int | None = None,
    ) -> Any:
        """A value (for one task id) or a list of values (for several), like Airflow.

        A mapped task's value is the list of its instances' values in map-index order,
        or, pulled from a task mapped in the same task group, the value of this instance's
        own map index; `map_indexes` picks one index instead.
        """
        single = isinstance(task_ids, str)
        if task_ids is None:
            ids = sorted(self.task.upstream_task_ids) if self.task is not None else []
        else:
            ids = [task_ids] if single else list(task_ids)
        wanted = {task_id: self.map_index_to_pull(task_id, map_indexes) for task_id in ids}
        found: dict[str, Any] = {}
        source = TaskInstanceKey(self.dag_id, run_id or self.run_id, self.task_id)
        for index in set(wanted.values()):
            same = [task_id for task_id, i in wanted.items() if i == index]
            found.update(self.api.get_xcoms(source, same, key, index))
        if isinstance(task_ids, str):
            return found.get(task_ids, default)
        return [found[task_id] for task_id in ids if task_id in found]

    def map_index_to_pull(self, task_id: str, map_indexes: int | None) -> int | None:
        """The map index of `task_id`'s value to pull: -1 for an unmapped task, None for
        all of a mapped task's values."""
        if map_indexes is not None:
            return map_indexes
        dag = getattr(self.task, "dag", None)
        producer = dag.task_dict.get(task_id) if dag is not None else None
        if producer is None or not producer.is_mapped:
            return -1
        group = producer.mapped_group
        if group is not None and group == getattr(self.task, "mapped_group", None):
            return self.map_index
        return None

    def skip_downstream(self, task_ids: Iterable[str]) -> None:
        """Ask the runner to mark these tasks skipped once this attempt succeeds."""
        self.skipped_task_ids.update(task_ids)
