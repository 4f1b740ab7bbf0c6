"""Task groups: a named block of tasks that prefixes their ids and acts as one edge end.

`group >> task` links the group's leaves (tasks with no downstream inside the group) to
the task, `task >> group` links the task to the group's roots, as in Airflow.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from engine.exceptions import DagDefinitionError
from engine.sdk.dag import DAG, MAX_ID_LENGTH, current_dag
from engine.sdk.edges import DependencyMixin

if TYPE_CHECKING:
    from engine.sdk.tasks import BaseOperator

GROUP_KEY_REGEX = re.compile(r"^[\w-]+$")

#: Open `with TaskGroup(...)` blocks, innermost last.
_group_stack: list[TaskGroup] = []


def current_task_group(dag: DAG | None) -> TaskGroup | None:
    """The innermost open task group of `dag`, if any."""
    if dag is None:
        return None
    for group in reversed(_group_stack):
        if group.dag is dag:
            return group
    return None


def unique_id(candidate: str, full: str, taken: set[str]) -> str:
    """`candidate`, or `candidate__N` if its full id is taken (Airflow's TaskFlow rule)."""
    if full not in taken:
        return candidate
    core, full_core = re.split(r"__\d+$", candidate)[0], re.split(r"__\d+$", full)[0]
    pattern = re.compile(rf"^{re.escape(full_core)}__(\d+)$")
    suffixes = [int(match.group(1)) for item in taken if (match := pattern.match(item))]
    return f"{core}__{max(suffixes, default=0) + 1}"


class TaskGroup(DependencyMixin):
    """Tasks created inside `with TaskGroup("g"):` get ids "g.<task_id>" (nested: "a.b.t")."""

    def __init__(
        self,
        group_id: str,
        prefix_group_id: bool = True,
        tooltip: str = "",
        default_args: Mapping[str, Any] | None = None,
        parent_group: TaskGroup | None = None,
        dag: DAG | None = None,
    ) -> None:
        if dag is None:
            dag = parent_group.dag if parent_group is not None else current_dag()
        if dag is None:
            raise DagDefinitionError(
                f"TaskGroup {group_id!r} must be created inside a DAG ('with DAG(...):') "
                "or be given dag="
            )
        if not isinstance(group_id, str) or not GROUP_KEY_REGEX.match(group_id):
            raise DagDefinitionError(
                f"group_id {group_id!r} is invalid: use letters, digits, underscores and dashes"
            )
        if parent_group is None:
            parent_group = current_task_group(dag)
        if parent_group is not None and parent_group.dag is not dag:
            raise DagDefinitionError(f"TaskGroup {group_id!r}: its parent belongs to another DAG")
        self.dag: DAG = dag
        self._group_id = group_id
        self.parent_group = parent_group
        self.prefix_group_id = prefix_group_id
        self.tooltip = tooltip
        inherited = parent_group.default_args if parent_group is not None else {}
        self.default_args: dict[str, Any] = {**inherited, **(default_args or {})}
        self.children: dict[str, BaseOperator | TaskGroup] = {}
        #: what a mapped task group maps over (an engine.sdk.mapping.ExpandInput), else None
        self.expand_input: Any = None
        if len(self.group_id) > MAX_ID_LENGTH:
            raise DagDefinitionError(f"group id {self.group_id!r} is too long")
        dag._add_task_group(self)
        if parent_group is not None:
            parent_group.children[self.group_id] = self

    def __repr__(self) -> str:
        return f"<TaskGroup: {self.group_id}>"

    @property
    def group_id(self) -> str:
        parent = self.parent_group
        if parent is not None and parent.prefix_group_id:
            return parent.child_id(self._group_id)
        return self._group_id

    def child_id(self, label: str) -> str:
        """The full id of a child called `label`."""
        return f"{self.group_id}.{label}" if self.prefix_group_id else label

    def _add_child(self, task: BaseOperator) -> None:
        self.children[task.task_id] = task

    def __enter__(self) -> TaskGroup:
        _group_stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        while _group_stack:
            if _group_stack.pop() is self:
                break

    def iter_tasks(self) -> Iterator[BaseOperator]:
        """Every task in the group, nested groups included."""
        for child in self.children.values():
            if isinstance(child, TaskGroup):
                yield from child.iter_tasks()
            else:
                yield child

    @property
    def task_ids(self) -> set[str]:
        return {task.task_id for task in self.iter_tasks()}

    def _members_in_dag_order(self) -> list[BaseOperator]:
        ids = self.task_ids
        return [task for task in self.dag.task_dict.values() if task.task_id in ids]

    @property
    def roots(self) -> list[BaseOperator]:
        """Tasks of the group with no upstream task inside the group."""
        ids = self.task_ids
        return [t for t in self._members_in_dag_order() if not t.upstream_task_ids & ids]

    @property
    def leaves(self) -> list[BaseOperator]:
        """Tasks of the group with no downstream task inside the group."""
        ids = self.task_ids
        return [t for t in self._members_in_dag_order() if not t.downstream_task_ids & ids]


class _GroupFactory:
    """A `@task_group` function: call it for a group, or `.expand(...)` for a mapped one."""

    def __init__(self, function: Callable[..., Any], group_kwargs: Mapping[str, Any]) -> None:
        functools.update_wrapper(self, function)
        self.function = function
        self.group_kwargs = dict(group_kwargs)
        self.group_name: str = self.group_kwargs.get("group_id") or function.__name__

    def new_group(self) -> TaskGroup:
        """A fresh group for one call: its id made unique in the DAG (g, g__1, ...)."""
        options = dict(self.group_kwargs)
        dag = options.get("dag") or current_dag()
        parent = options.get("parent_group") or current_task_group(dag)
        base = options.pop("group_id", None) or self.function.__name__
        if dag is not None:
            full = parent.child_id(base) if parent is not None else base
            base = unique_id(base, full, set(dag.task_dict) | set(dag.task_group_dict))
        options.setdefault("tooltip", inspect.getdoc(self.function) or "")
        return TaskGroup(base, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        group = self.new_group()
        with group:
            result = self.function(*args, **kwargs)
        return group if result is None else result

    def parameter_names(self, given: Mapping[str, Any]) -> list[str]:
        """The function's parameters that `given` does not fill (for expand_kwargs)."""
        names = inspect.signature(self.function).parameters
        return [name for name in names if name not in given]

    def partial(self, **kwargs: Any) -> _GroupPartial:
        """Arguments every mapped copy of the group shares; then `.expand(...)`."""
        return _GroupPartial(self, kwargs)

    def expand(self, **mapped: Any) -> Any:
        """The group once, its tasks mapped over the product of the arguments."""
        return _GroupPartial(self, {}).expand(**mapped)

    def expand_kwargs(self, value: Any) -> Any:
        """The group once, its tasks mapped over a list of keyword-argument dicts."""
        return _GroupPartial(self, {}).expand_kwargs(value)


class _GroupPartial:
    def __init__(self, factory: _GroupFactory, kwargs: Mapping[str, Any]) -> None:
        self.factory = factory
        self.kwargs = dict(kwargs)

    def expand(self, **mapped: Any) -> Any:
        from engine.sdk.mapping import PRODUCT, expand_group

        return expand_group(self.factory, self.kwargs, PRODUCT, mapped)

    def expand_kwargs(self, value: Any) -> Any:
        from engine.sdk.mapping import KWARGS, expand_group

        return expand_group(self.factory, self.kwargs, KWARGS, value)


def task_group(python_callable: Callable[..., Any] | None = None, **group_kwargs: Any) -> Any:
    """Decorate a function whose tasks form a group each time it is called in a DAG.

    The group id defaults to the function's name (suffixed __1, __2 when called again) and
    the tooltip to its docstring. The call returns the function's return value, or the
    TaskGroup when the function returns None, so `g() >> t` works either way.
    `.expand(...)`/`.partial(...).expand(...)` make a mapped task group.
    """

    def decorate(function: Callable[..., Any]) -> _GroupFactory:
        return _GroupFactory(function, group_kwargs)

    if python_callable is not None:
        return decorate(python_callable)
    return decorate
