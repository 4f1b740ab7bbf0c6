"""A DAG as plain JSON-compatible data, and a read-only view of that data.

The scheduler and the console work from the serialized form so they never import user
code. The form is deterministic (sorted id lists, insertion-ordered tasks, no object
reprs), so `dag_hash` only changes when the definition does.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

import pendulum

from engine.sdk.dag import topological_order
from engine.sdk.deadlines import Deadline
from engine.sdk.mapping import mapping_spec
from engine.sdk.params import ParamsDict
from engine.sdk.schedules import Timetable, parse_timezone, timezone_name
from engine.sdk.setup_teardown import indirect_setups, outcome_leaves
from engine.sdk.trigger_rules import TriggerRule

FORMAT_VERSION = 1
CALLBACK_KINDS = ("execute", "success", "failure", "retry", "skipped")


def _seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _display_name(name: str | None, identifier: str) -> str | None:
    """A display name worth storing: None when it is the id (most DAGs and tasks)."""
    return name if name and name != identifier else None


def serialize_task(task: Any) -> dict[str, Any]:
    operator_class = getattr(task, "operator_class", type(task))  # a mapped task's real one
    data: dict[str, Any] = {
        "task_id": task.task_id,
        "operator": operator_class.__name__,
        "operator_name": task.custom_operator_name or operator_class.__name__,
        "module": operator_class.__module__,
        "owner": task.owner,
        "trigger_rule": str(task.trigger_rule),
        "retries": task.retries,
        "retry_delay": _seconds(task.retry_delay),
        "retry_exponential_backoff": task.retry_exponential_backoff,
        "max_retry_delay": _seconds(task.max_retry_delay),
        "execution_timeout": _seconds(task.execution_timeout),
        "sla": _seconds(task.sla),
        "pool": task.pool,
        "pool_slots": task.pool_slots,
        "priority_weight": task.priority_weight,
        "weight_rule": task.weight_rule,
        "priority_weight_total": task.priority_weight_total,
        "queue": task.queue,
        "depends_on_past": task.depends_on_past,
        "wait_for_downstream": task.wait_for_downstream,
        "max_active_tis_per_dag": task.max_active_tis_per_dag,
        "max_active_tis_per_dagrun": task.max_active_tis_per_dagrun,
        "upstream_task_ids": sorted(task.upstream_task_ids),
        "downstream_task_ids": sorted(task.downstream_task_ids),
        "task_group": task.task_group,
        "doc": task.doc,
        "doc_md": task.doc_md,
        "template_fields": list(task.template_fields),
        "do_xcom_push": task.do_xcom_push,
        "multiple_outputs": bool(getattr(task, "multiple_outputs", False)),
        "is_sensor": bool(task.is_sensor),
        "sensor": None,
        "is_setup": bool(task.is_setup),
        "is_teardown": bool(task.is_teardown),
        "on_failure_fail_dagrun": bool(task.on_failure_fail_dagrun),
        "mapping": mapping_spec(task),
    }
    display_name = _display_name(getattr(task, "task_display_name", None), task.task_id)
    if display_name is not None:  # stored only when set, so other DAGs hash as before
        data["task_display_name"] = display_name
    for kind in CALLBACK_KINDS:
        data[f"has_on_{kind}_callback"] = bool(getattr(task, f"on_{kind}_callback", None))
    if task.is_sensor:
        data["sensor"] = {
            "mode": task.mode,
            "poke_interval": task.poke_interval,
            "timeout": task.timeout,
            "soft_fail": task.soft_fail,
            "exponential_backoff": task.exponential_backoff,
        }
    return data


def serialize_dag(dag: Any) -> dict[str, Any]:
    """Everything the scheduler and console need about `dag`, as JSON-compatible data."""
    tasks = [serialize_task(task) for task in dag.task_dict.values()]
    edges = [
        {"upstream": up, "downstream": down, "label": dag.edge_info(up, down).get("label")}
        for up in sorted(dag.task_dict)
        for down in sorted(dag.task_dict[up].downstream_task_ids)
    ]
    groups = {}
    for group_id, group in sorted(dag.task_group_dict.items()):
        members = group.task_ids
        groups[group_id] = {
            "tooltip": group.tooltip,
            "parent": group.parent_group.group_id if group.parent_group is not None else None,
            "prefix_group_id": group.prefix_group_id,
            "task_ids": [task_id for task_id in dag.task_dict if task_id in members],
        }
    data = {
        "format_version": FORMAT_VERSION,
        "dag_id": dag.dag_id,
        "fileloc": dag.fileloc,
        "timezone": timezone_name(dag.timezone),
        "schedule": dag.timetable.serialize(),
        "timetable_summary": dag.timetable.summary,
        "start_date": _iso(dag.start_date),
        "end_date": _iso(dag.end_date),
        "catchup": dag.catchup,
        "tags": sorted(dag.tags),
        "owner": dag.owner,
        "description": dag.description,
        "doc_md": dag.doc_md,
        "max_active_runs": dag.max_active_runs,
        "max_active_tasks": dag.max_active_tasks,
        "dagrun_timeout": _seconds(dag.dagrun_timeout),
        "deadline": dag.deadline.to_dict() if dag.deadline is not None else None,
        "is_paused_upon_creation": dag.is_paused_upon_creation,
        "has_on_success_callback": bool(dag.on_success_callback),
        "has_on_failure_callback": bool(dag.on_failure_callback),
        "has_sla_miss_callback": bool(dag.sla_miss_callback),
        "render_template_as_native_obj": dag.render_template_as_native_obj,
        "params": dag.params.dump(owner=f"DAG {dag.dag_id!r}"),
        "tasks": tasks,
        "edges": edges,
        "task_groups": groups,
    }
    display_name = _display_name(dag.dag_display_name, dag.dag_id)
    if display_name is not None:  # stored only when set, so other DAGs hash as before
        data["dag_display_name"] = display_name
    return data


def _timedelta(value: float | None) -> timedelta | None:
    return timedelta(seconds=value) if value is not None else None


def _datetime(value: str | None) -> Any:
    return pendulum.parse(value).in_timezone("UTC") if value is not None else None  # type: ignore[union-attr]


class SerializedTask:
    """Read-only task: the serialized fields as attributes, durations as timedeltas."""

    # set from the serialized fields in __init__
    task_id: str
    operator: str
    operator_name: str
    owner: str
    retries: int
    retry_delay: timedelta | None
    max_retry_delay: timedelta | None
    retry_exponential_backoff: bool
    execution_timeout: timedelta | None
    sla: timedelta | None
    pool: str
    pool_slots: int
    priority_weight: int
    priority_weight_total: int
    weight_rule: str
    queue: str
    depends_on_past: bool
    max_active_tis_per_dag: int | None
    task_group: str | None
    is_sensor: bool
    is_setup: bool
    is_teardown: bool
    on_failure_fail_dagrun: bool
    # defaults for DAGs serialized before these fields existed
    wait_for_downstream = False
    max_active_tis_per_dagrun: int | None = None
    #: how a mapped task counts its instances (engine.sdk.mapping.mapping_spec), None if unmapped
    mapping: dict[str, Any] | None = None

    def __init__(self, data: dict[str, Any], dag: SerializedDAG) -> None:
        self.__dict__.update(data)
        self.data = data
        self.dag = dag
        self.trigger_rule = TriggerRule(data["trigger_rule"])
        for name in ("retry_delay", "max_retry_delay", "execution_timeout", "sla"):
            setattr(self, name, _timedelta(data.get(name)))
        self.upstream_task_ids = frozenset(data["upstream_task_ids"])
        self.downstream_task_ids = frozenset(data["downstream_task_ids"])
        # absent from DAGs serialized before setup/teardown existed
        for name in ("is_setup", "is_teardown", "on_failure_fail_dagrun"):
            setattr(self, name, bool(data.get(name, False)))
        self.is_mapped = self.mapping is not None
        self.mapped_group: str | None = self.mapping["group"] if self.mapping else None
        #: the tasks whose outputs a mapped task maps over (its expansion waits for them)
        self.mapping_inputs: tuple[str, ...] = tuple(
            source["task_id"]
            for source in (self.mapping or {}).get("sources", ())
            if "task_id" in source
        )

    def __repr__(self) -> str:
        return f"<SerializedTask({self.operator}): {self.task_id}>"

    @property
    def dag_id(self) -> str:
        return self.dag.dag_id

    def get_flat_relative_ids(self, upstream: bool = False) -> set[str]:
        found: set[str] = set()
        todo = [self.task_id]
        while todo:
            task = self.dag.task_dict.get(todo.pop())
            if task is None:
                continue
            relatives = task.upstream_task_ids if upstream else task.downstream_task_ids
            for relative in relatives - found:
                found.add(relative)
                todo.append(relative)
        found.discard(self.task_id)
        return found


class SerializedDAG:
    """Read-only DAG rebuilt from `serialize_dag` output, without importing user code."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.dag_id: str = data["dag_id"]
        self.fileloc: str = data.get("fileloc", "")
        self.timezone = parse_timezone(data.get("timezone", "UTC"))
        self.timetable = Timetable.deserialize(data["schedule"])
        self.start_date = _datetime(data.get("start_date"))
        self.end_date = _datetime(data.get("end_date"))
        self.catchup: bool = data.get("catchup", False)
        self.tags: list[str] = list(data.get("tags") or [])
        self.owner: str = data.get("owner", "")
        self.description: str | None = data.get("description")
        self.doc_md: str | None = data.get("doc_md")
        self.max_active_runs: int | None = data.get("max_active_runs")
        self.max_active_tasks: int | None = data.get("max_active_tasks")
        self.dagrun_timeout = _timedelta(data.get("dagrun_timeout"))
        deadline = data.get("deadline")
        self.deadline = Deadline.from_dict(deadline) if deadline is not None else None
        self.is_paused_upon_creation: bool | None = data.get("is_paused_upon_creation")
        for kind in ("on_success_callback", "on_failure_callback", "sla_miss_callback"):
            setattr(self, f"has_{kind}", bool(data.get(f"has_{kind}")))
        self.params = ParamsDict.load(data.get("params") or {})
        self.tasks = [SerializedTask(item, self) for item in data["tasks"]]
        self.task_dict = {task.task_id: task for task in self.tasks}
        self.task_groups: dict[str, dict[str, Any]] = dict(data.get("task_groups") or {})
        self._labels = {
            (edge["upstream"], edge["downstream"]): edge["label"]
            for edge in data.get("edges") or []
            if edge.get("label") is not None
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SerializedDAG:
        return cls(data)

    def __repr__(self) -> str:
        return f"<SerializedDAG: {self.dag_id}>"

    @property
    def task_ids(self) -> list[str]:
        return list(self.task_dict)

    def get_task(self, task_id: str) -> SerializedTask:
        try:
            return self.task_dict[task_id]
        except KeyError:
            raise KeyError(f"task {task_id!r} not found in DAG {self.dag_id!r}") from None

    def has_task(self, task_id: str) -> bool:
        return task_id in self.task_dict

    @property
    def roots(self) -> list[SerializedTask]:
        return [task for task in self.tasks if not task.upstream_task_ids]

    @property
    def leaves(self) -> list[SerializedTask]:
        return [task for task in self.tasks if not task.downstream_task_ids]

    @functools.cached_property
    def indirect_setups(self) -> dict[str, frozenset[str]]:
        """Work task -> the setups it waits for beyond its direct upstream (cached)."""
        return indirect_setups(self)

    @functools.cached_property
    def outcome_leaves(self) -> list[str]:
        """The tasks whose states decide a run's outcome: teardowns left out (cached)."""
        return outcome_leaves(self)

    def topological_sort(self) -> list[SerializedTask]:
        upstream = {task.task_id: task.upstream_task_ids for task in self.tasks}
        order = topological_order(self.task_ids, upstream, self.dag_id)
        return [self.task_dict[task_id] for task_id in order]

    def edge_info(self, upstream_task_id: str, downstream_task_id: str) -> dict[str, Any]:
        label = self._labels.get((upstream_task_id, downstream_task_id))
        return {"label": label} if label is not None else {}
