"""The DAG: a named set of tasks, their edges, a schedule and run-level settings.

Everything here is pure Python, so a DAG file imports without touching the metastore.
Definition errors are raised where they are made (duplicate task id when the task is
added, a bad schedule when the DAG is built) and name the DAG and the task, because the
first reader of the message is the author of the DAG file.
"""

from __future__ import annotations

import functools
import heapq
import inspect
import re
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.exceptions import CycleError, DagDefinitionError, DuplicateTaskIdError
from engine.sdk.deadlines import Deadline, coerce_deadline
from engine.sdk.params import NOTSET, DagParam, Param, ParamsDict
from engine.sdk.schedules import (
    coerce_dag_date,
    timetable_from_schedule,
    timezone_of,
)

if TYPE_CHECKING:
    from types import FrameType

    from engine.sdk.tasks import BaseOperator, TaskGroup

KEY_REGEX = re.compile(r"^[\w.-]+$")
MAX_ID_LENGTH = 250
DEFAULT_OWNER = "dagwatch"

#: DAGs whose `with` block is open; tasks created inside attach to the innermost.
_dag_stack: list[DAG] = []
#: DAGs used as context managers (incl. @dag-built ones), for `pop_autoregistered_dags`.
_autoregistered: list[DAG] = []


def current_dag() -> DAG | None:
    """The DAG of the innermost open `with DAG(...)` block, if any."""
    return _dag_stack[-1] if _dag_stack else None


def pop_autoregistered_dags() -> list[DAG]:
    """DAGs whose `with` block closed since the last call (a DAG file need not assign them)."""
    found = list(dict.fromkeys(_autoregistered))
    _autoregistered.clear()
    return found


def check_id(value: Any, what: str) -> str:
    """Ids appear in paths, URLs and logs: letters, digits, '_', '-' and '.' only."""
    if not isinstance(value, str) or not value:
        raise DagDefinitionError(f"{what} must be a non-empty string, not {value!r}")
    if len(value) > MAX_ID_LENGTH or not KEY_REGEX.match(value):
        raise DagDefinitionError(
            f"{what} {value!r} is invalid: use at most {MAX_ID_LENGTH} letters, digits, "
            "underscores, dashes and dots"
        )
    return value


def normalize_callbacks(value: Any, what: str) -> list[Callable[..., Any]]:
    """None, a callable or a list of callables -> a list."""
    if value is None:
        return []
    items = list(value) if isinstance(value, list | tuple) else [value]
    for item in items:
        if not callable(item):
            raise DagDefinitionError(f"{what} must be a callable or a list of callables: {item!r}")
    return items


def _caller_file() -> str:
    """The file of the first frame outside this module: the file that built the DAG."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame.f_code.co_filename if frame is not None else ""


def find_cycle(ids: Sequence[str], downstream: Mapping[str, Collection[str]]) -> list[str] | None:
    """A cycle as a path that ends where it starts (a, b, a), or None; deterministic."""
    index = {task_id: i for i, task_id in enumerate(ids)}

    def children(node: str) -> Iterator[str]:
        return iter(
            sorted((c for c in downstream.get(node, ()) if c in index), key=index.__getitem__)
        )

    state: dict[str, int] = {}  # 1: on the current path, 2: fully explored
    for root in ids:
        if root in state:
            continue
        path, stack = [root], [children(root)]
        state[root] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child) :], child]
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append(children(child))
    return None


def topological_order(
    ids: Sequence[str], upstream: Mapping[str, Collection[str]], dag_id: str
) -> list[str]:
    """Ids with every task after its upstream tasks; ties keep insertion order."""
    index = {task_id: i for i, task_id in enumerate(ids)}
    waiting = {t: sum(1 for u in upstream.get(t, ()) if u in index) for t in ids}
    downstream: dict[str, list[str]] = {t: [] for t in ids}
    for task_id in ids:
        for up in upstream.get(task_id, ()):
            if up in index:
                downstream[up].append(task_id)
    ready = [(index[t], t) for t in ids if waiting[t] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, task_id = heapq.heappop(ready)
        order.append(task_id)
        for child in downstream[task_id]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (index[child], child))
    if len(order) < len(ids):
        cycle = find_cycle(ids, downstream) or []
        raise CycleError(f"cycle in DAG {dag_id!r}: {' -> '.join(cycle)}")
    return order


def _optional_int(value: Any, what: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise DagDefinitionError(f"{what} must be None or an integer >= 1, not {value!r}")
    return value


def _template_names(value: Any, where: str, what: str) -> dict[str, Any]:
    """user_defined_macros/filters as a dict keyed by Jinja names; filters must be callable.

    Checked here so a typo fails when the DAG file is parsed, not in every task's render.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DagDefinitionError(
            f"{where}: user_defined_{what} must be a dict, not {type(value).__name__}"
        )
    for name, item in value.items():
        # Jinja filter names may be dotted ({{ x | my.filter }}); a macro is a plain name
        parts = name.split(".") if isinstance(name, str) and what == "filters" else [name]
        if not all(isinstance(part, str) and part.isidentifier() for part in parts):
            raise DagDefinitionError(
                f"{where}: user_defined_{what} key {name!r} is not a valid Jinja name"
            )
        if what == "filters" and not callable(item):
            raise DagDefinitionError(
                f"{where}: user_defined_filters[{name!r}] must be callable, not {item!r}"
            )
    return dict(value)


def _schedule_interval(dag_id: str, schedule: Any, schedule_interval: Any) -> Any:
    """Airflow 2's `schedule_interval=`: the schedule, with a deprecation warning."""
    from engine.sdk.compat import deprecated

    if schedule is not None:
        raise DagDefinitionError(
            f"DAG {dag_id!r}: pass schedule= or schedule_interval= (Airflow 2), not both"
        )
    deprecated("DAG(schedule_interval=...)", "DAG(schedule=...)")
    return schedule_interval


def _concurrency(dag_id: str, max_active_tasks: int | None, concurrency: int) -> int:
    """Airflow 2's `concurrency=`: max_active_tasks, with a deprecation warning."""
    from engine.sdk.compat import deprecated

    if max_active_tasks is not None:
        raise DagDefinitionError(
            f"DAG {dag_id!r}: pass max_active_tasks= or concurrency= (Airflow 2), not both"
        )
    deprecated("DAG(concurrency=...)", "DAG(max_active_tasks=...)")
    return concurrency


class DAG:
    """A workflow: tasks, their dependencies and when it runs.

    Use as a context manager so tasks created inside attach to it.
    """

    def __init__(
        self,
        dag_id: str,
        *,
        schedule: Any = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        catchup: bool = False,
        default_args: Mapping[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        description: str | None = None,
        owner: str | None = None,
        params: Mapping[str, Any] | None = None,
        max_active_runs: int | None = None,
        max_active_tasks: int | None = None,
        dagrun_timeout: timedelta | None = None,
        deadline: Deadline | timedelta | None = None,
        on_success_callback: Any = None,
        on_failure_callback: Any = None,
        sla_miss_callback: Any = None,
        is_paused_upon_creation: bool | None = None,
        doc_md: str | None = None,
        render_template_as_native_obj: bool = False,
        template_searchpath: str | Iterable[str] | None = None,
        user_defined_macros: Mapping[str, Any] | None = None,
        user_defined_filters: Mapping[str, Callable[..., Any]] | None = None,
        fileloc: str | None = None,
        dag_display_name: str | None = None,
        schedule_interval: Any = NOTSET,
        concurrency: int | None = None,
    ) -> None:
        self.dag_id = check_id(dag_id, "dag_id")
        if schedule_interval is not NOTSET:
            schedule = _schedule_interval(dag_id, schedule, schedule_interval)
        if concurrency is not None:
            max_active_tasks = _concurrency(dag_id, max_active_tasks, concurrency)
        self.fileloc = fileloc or _caller_file()
        self.default_args: dict[str, Any] = dict(default_args or {})
        where = f"DAG {dag_id!r}"
        self.params = ParamsDict(self.default_args.pop("params", None))
        for name, value in (params or {}).items():
            self.params[name] = value
        start_date = start_date if start_date is not None else self.default_args.get("start_date")
        end_date = end_date if end_date is not None else self.default_args.get("end_date")
        for name, value in (("start_date", start_date), ("end_date", end_date)):
            if value is not None and not isinstance(value, datetime):
                raise DagDefinitionError(f"{where}: {name} must be a datetime, not {value!r}")
        self.timezone = timezone_of(start_date)
        self.start_date = coerce_dag_date(start_date) if start_date is not None else None
        self.end_date = coerce_dag_date(end_date) if end_date is not None else None
        self.schedule = schedule
        if dag_display_name is not None and (
            not isinstance(dag_display_name, str) or not dag_display_name.strip()
        ):
            raise DagDefinitionError(f"{where}: dag_display_name must be a non-empty string")
        self.dag_display_name = dag_display_name or dag_id
        self.timetable = timetable_from_schedule(schedule, self.timezone, dag_id)
        self.catchup = bool(catchup)
        self.owner = owner or self.default_args.get("owner") or DEFAULT_OWNER
        self.tags = list(dict.fromkeys(tags or ()))
        for tag in self.tags:
            if not isinstance(tag, str) or not tag or len(tag) > 100:
                raise DagDefinitionError(f"{where}: tag {tag!r} must be a string of 1-100 chars")
        self.description = description
        self.doc_md = doc_md
        self.max_active_runs = _optional_int(max_active_runs, f"{where}: max_active_runs")
        self.max_active_tasks = _optional_int(max_active_tasks, f"{where}: max_active_tasks")
        if dagrun_timeout is not None and not isinstance(dagrun_timeout, timedelta):
            raise DagDefinitionError(f"{where}: dagrun_timeout must be a timedelta or None")
        self.dagrun_timeout = dagrun_timeout
        self.deadline = coerce_deadline(deadline, where)
        self.on_success_callback = normalize_callbacks(on_success_callback, f"{where}: callback")
        self.on_failure_callback = normalize_callbacks(on_failure_callback, f"{where}: callback")
        self.sla_miss_callback = normalize_callbacks(sla_miss_callback, f"{where}: callback")
        self.is_paused_upon_creation = is_paused_upon_creation
        self.render_template_as_native_obj = bool(render_template_as_native_obj)
        if isinstance(template_searchpath, str):
            template_searchpath = [template_searchpath]
        self.template_searchpath: list[str] = list(template_searchpath or [])
        self.user_defined_macros = _template_names(user_defined_macros, where, "macros")
        self.user_defined_filters = _template_names(user_defined_filters, where, "filters")
        self.task_dict: dict[str, BaseOperator] = {}
        self.task_group_dict: dict[str, TaskGroup] = {}
        self._check_schedule()

    def __repr__(self) -> str:
        return f"<DAG: {self.dag_id}>"

    def __enter__(self) -> DAG:
        _dag_stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        # remove this DAG even if an inner block forgot to exit
        while _dag_stack:
            if _dag_stack.pop() is self:
                break
        if exc[0] is None:
            _autoregistered.append(self)

    # -- tasks --------------------------------------------------------------------------

    @property
    def tasks(self) -> list[BaseOperator]:
        return list(self.task_dict.values())

    @property
    def task_ids(self) -> list[str]:
        return list(self.task_dict)

    @property
    def task_count(self) -> int:
        return len(self.task_dict)

    def has_task(self, task_id: str) -> bool:
        return task_id in self.task_dict

    def get_task(self, task_id: str) -> BaseOperator:
        try:
            return self.task_dict[task_id]
        except KeyError:
            raise KeyError(f"task {task_id!r} not found in DAG {self.dag_id!r}") from None

    def add_task(self, task: BaseOperator) -> None:
        """Attach a task; a second task with the same id is an error at once."""
        existing = self.task_dict.get(task.task_id)
        if existing is task:
            return
        if existing is not None or task.task_id in self.task_group_dict:
            what = "task" if existing is not None else "task group"
            raise DuplicateTaskIdError(
                f"task id {task.task_id!r} has already been added to DAG {self.dag_id!r} "
                f"(by a {what} with that id)"
            )
        if task._dag is not None and task._dag is not self:
            raise DagDefinitionError(
                f"task {task.task_id!r} already belongs to DAG {task._dag.dag_id!r}; "
                f"it cannot be added to DAG {self.dag_id!r}"
            )
        task._dag = self
        self.task_dict[task.task_id] = task

    def add_tasks(self, tasks: Iterable[BaseOperator]) -> None:
        for task in tasks:
            self.add_task(task)

    def _add_task_group(self, group: TaskGroup) -> None:
        group_id = group.group_id
        if group_id in self.task_group_dict or group_id in self.task_dict:
            raise DuplicateTaskIdError(
                f"group id {group_id!r} has already been added to DAG {self.dag_id!r}"
            )
        self.task_group_dict[group_id] = group

    @property
    def roots(self) -> list[BaseOperator]:
        """Tasks without upstream tasks, in insertion order."""
        return [t for t in self.task_dict.values() if not t.upstream_task_ids]

    @property
    def leaves(self) -> list[BaseOperator]:
        """Tasks without downstream tasks, in insertion order."""
        return [t for t in self.task_dict.values() if not t.downstream_task_ids]

    def topological_sort(self) -> list[BaseOperator]:
        """Tasks, each after its upstream tasks; among ready tasks, insertion order."""
        upstream = {task_id: task.upstream_task_ids for task_id, task in self.task_dict.items()}
        order = topological_order(list(self.task_dict), upstream, self.dag_id)
        return [self.task_dict[task_id] for task_id in order]

    def edge_info(self, upstream_task_id: str, downstream_task_id: str) -> dict[str, Any]:
        """{"label": ...} for an edge made through a Label, else {}."""
        task = self.task_dict.get(upstream_task_id)
        label = task._edge_labels.get(downstream_task_id) if task is not None else None
        return {"label": label} if label is not None else {}

    def set_edge_info(
        self, upstream_task_id: str, downstream_task_id: str, info: Mapping[str, Any]
    ) -> None:
        self.get_task(upstream_task_id)._edge_labels[downstream_task_id] = info["label"]

    def following_schedule(self, dttm: datetime) -> datetime | None:
        """Airflow 2: the schedule point after `dttm` (None for @once or schedule=None)."""
        from engine.sdk.compat import deprecated, following_schedule

        deprecated("dag.following_schedule(dt)", "dag.timetable / data_interval_end")
        return following_schedule(self.timetable, dttm)

    def previous_schedule(self, dttm: datetime) -> datetime | None:
        """Airflow 2: the schedule point before `dttm` (None for @once or schedule=None)."""
        from engine.sdk.compat import deprecated, previous_schedule

        deprecated("dag.previous_schedule(dt)", "dag.timetable / data_interval_start")
        return previous_schedule(self.timetable, dttm)

    def param(self, name: str, default: Any = NOTSET) -> DagParam:
        """A placeholder for param `name`'s run-time value (usable as a task argument)."""
        if default is not NOTSET:
            self.params[name] = default
        return DagParam(name, default)

    # -- validation ---------------------------------------------------------------------

    def _check_schedule(self) -> None:
        if self.timetable.periodic and self.start_date is None:
            raise DagDefinitionError(
                f"DAG {self.dag_id!r} has schedule {self.timetable.summary!r} but no start_date; "
                "pass start_date= (or default_args['start_date']) or use schedule=None"
            )
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise DagDefinitionError(
                f"DAG {self.dag_id!r}: end_date {self.end_date.isoformat()} is before "
                f"start_date {self.start_date.isoformat()}"
            )

    def _check_setups(self) -> None:
        """Work right after a setup must need it to succeed (Airflow's rule), so clearing
        and trigger rules agree on when the work may run."""
        for task in self.task_dict.values():
            if not task.is_setup:
                continue
            for down in task.downstream_list:
                if not down.is_teardown and down.trigger_rule != "all_success":
                    raise DagDefinitionError(
                        f"task {down.task_id!r} of DAG {self.dag_id!r} follows setup "
                        f"{task.task_id!r}, so its trigger_rule must be all_success, "
                        f"not {down.trigger_rule}"
                    )

    def validate(self) -> None:
        """Check the whole definition: edges, cycles, schedule, param defaults."""
        for task in self.task_dict.values():
            for other in task.upstream_task_ids | task.downstream_task_ids:
                if other not in self.task_dict:
                    raise DagDefinitionError(
                        f"task {task.task_id!r} of DAG {self.dag_id!r} has a dependency on "
                        f"task {other!r}, which is not in the DAG"
                    )
        self.topological_sort()
        self._check_setups()
        self._check_schedule()
        try:
            self.params.validate()
        except Exception as exc:
            raise type(exc)(f"DAG {self.dag_id!r}: {exc}") from None


def dag(dag_id: Any = None, **dag_kwargs: Any) -> Any:
    """Decorate a function that builds a DAG's tasks; calling it returns the DAG.

    The dag_id defaults to the function's name, the docstring to doc_md, and the
    function's parameters become DAG params (their defaults the params' defaults); the
    function receives placeholders that resolve to the run's param values.
    """
    if callable(dag_id):
        return dag()(dag_id)

    def decorate(function: Callable[..., Any]) -> Callable[..., DAG]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def factory(*args: Any, **kwargs: Any) -> DAG:
            bound = signature.bind_partial(*args, **kwargs)
            bound.apply_defaults()
            options = dict(dag_kwargs)
            options.setdefault("doc_md", inspect.getdoc(function))
            built = DAG(dag_id or function.__name__, **options)
            call_args: list[Any] = []
            call_kwargs: dict[str, Any] = {}
            for name, parameter in signature.parameters.items():
                if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                    continue
                value = bound.arguments.get(name, NOTSET)
                if value is not NOTSET:
                    built.params[name] = value
                elif name not in built.params:
                    built.params[name] = Param()
                placeholder = DagParam(name)
                if parameter.kind is parameter.POSITIONAL_ONLY:
                    call_args.append(placeholder)
                else:
                    call_kwargs[name] = placeholder
            with built:
                function(*call_args, **call_kwargs)
            return built

        return factory

    return decorate
