"""Dynamic task mapping: one task in the DAG file, as many task instances as its input has
elements, decided when the run reaches it (Airflow's `partial`/`expand`/`expand_kwargs`).

A mapped task is a `MappedOperator` in the DAG: it has the scheduling arguments of the task
(pool, retries, trigger rule...) and builds the real operator for each map index when an
attempt starts (`unmap`). Tasks inside a mapped task group are ordinary operators marked
with `mapped_group`; they read their element through `MappedArgument`.

The scheduler never sees user values: the serialized form of a mapping (`spec`) holds the
length of each literal input and, for inputs that are a task's output, that task's id and
XCom key. `expanded_length` turns a spec and the pushed values into a count.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from engine.exceptions import DagDefinitionError, TaskError
from engine.sdk.tasks import BaseOperator, MappedArgument, XComArg, iter_xcom_args

if TYPE_CHECKING:
    from engine.sdk.decorators import _TaskDecorator

#: The two ways of mapping: the product of several named lists, or one list of kwargs.
PRODUCT = "product"
KWARGS = "kwargs"


def _literal_elements(value: Any) -> list[Any]:
    """A literal input's elements: a list's items, a dict's (key, value) pairs (Airflow)."""
    return list(value.items()) if isinstance(value, dict) else list(value)


class ExpandInput:
    """What a mapped task or group maps over: `expand(x=..., y=...)` (the product of the
    inputs, the last one varying fastest) or `expand_kwargs(list_of_dicts)`."""

    def __init__(self, kind: str, value: Any, owner: str) -> None:
        self.kind = kind
        self.value = value
        if kind == PRODUCT:
            if not value:
                raise DagDefinitionError(f"{owner}: expand() needs at least one argument")
            for name, item in value.items():
                if not isinstance(item, list | tuple | dict | XComArg):
                    raise DagDefinitionError(
                        f"{owner}: expand() argument {name!r} must be a list, a dict or a "
                        f"task's output, not {type(item).__name__}"
                    )
        elif not isinstance(value, XComArg):
            if not isinstance(value, list | tuple) or not all(isinstance(i, dict) for i in value):
                raise DagDefinitionError(
                    f"{owner}: expand_kwargs() takes a list of dicts or a task's output, "
                    f"not {value!r}"
                )
            for item in value:
                if not all(isinstance(key, str) for key in item):
                    raise DagDefinitionError(
                        f"{owner}: expand_kwargs() dicts must have string keys: {item!r}"
                    )

    def names(self) -> list[str]:
        """The argument names the input fills (unknown until run time for kwargs from XCom)."""
        if self.kind == PRODUCT:
            return list(self.value)
        if isinstance(self.value, XComArg):
            return []
        return sorted({key for item in self.value for key in item})

    def xcom_args(self) -> Iterator[XComArg]:
        if self.kind == PRODUCT:
            for item in self.value.values():
                if isinstance(item, XComArg):
                    yield item
        else:
            yield from iter_xcom_args(self.value)

    def spec(self) -> list[dict[str, Any]]:
        """The serialized inputs: {"length": n} for a literal, {"task_id", "key"} for XCom."""
        items = self.value.items() if self.kind == PRODUCT else [("*", self.value)]
        sources = []
        for name, item in items:
            if isinstance(item, XComArg):
                sources.append({"name": name, "task_id": item.operator.task_id, "key": item.key})
            else:
                sources.append({"name": name, "length": len(item)})
        return sources

    def element(self, context: Mapping[str, Any], index: int) -> dict[str, Any]:
        """The keyword arguments of map index `index`, with XCom inputs pulled."""
        if self.kind == KWARGS:
            items = _input_elements(self.value, context, "expand_kwargs()")
            _check_index(index, len(items))
            element = items[index]
            if not isinstance(element, dict) or not all(isinstance(k, str) for k in element):
                raise TaskError(
                    f"expand_kwargs() element {index} must be a dict with string keys, "
                    f"not {element!r}"
                )
            return dict(element)
        lists = {
            name: _input_elements(item, context, f"expand() argument {name!r}")
            for name, item in self.value.items()
        }
        _check_index(index, math.prod(len(items) for items in lists.values()))
        chosen: dict[str, Any] = {}
        for name in reversed(list(lists)):  # the last input varies fastest
            items = lists[name]
            index, position = divmod(index, len(items))
            chosen[name] = items[position]
        return {name: chosen[name] for name in lists}


def _check_index(index: int, length: int) -> None:
    if not 0 <= index < length:
        raise TaskError(
            f"map index {index} is out of range: the input now has {length} elements "
            "(it changed since the task was expanded; clear the task to expand it again)"
        )


def _input_elements(value: Any, context: Mapping[str, Any], what: str) -> list[Any]:
    if isinstance(value, XComArg):
        value = value.resolve(context)
        if not isinstance(value, list | tuple | dict):
            raise TaskError(f"{what}: the upstream value to map over must be a list or a dict")
    return _literal_elements(value)


def expanded_length(
    sources: Sequence[Mapping[str, Any]],
    kind: str,
    pushed: Mapping[tuple[str, str], Any],
    mapped_counts: Mapping[str, int],
) -> int:
    """How many task instances a mapping needs, given what its upstream tasks pushed.

    `pushed` holds (task_id, key) -> the XCom value of unmapped sources; `mapped_counts`
    the instance count of sources that are mapped themselves (their outputs form a list).
    Raises ValueError with a message for the user when an input cannot be mapped over.
    """
    lengths = []
    for source in sources:
        if "length" in source:
            lengths.append(int(source["length"]))
            continue
        task_id, key = source["task_id"], source["key"]
        if task_id in mapped_counts:
            lengths.append(mapped_counts[task_id])
            continue
        value = pushed.get((task_id, key))
        if value is None:
            raise ValueError(f"cannot expand: upstream task {task_id!r} pushed no {key!r} XCom")
        if not isinstance(value, list | dict):
            raise ValueError(
                f"cannot expand: upstream task {task_id!r} returned "
                f"{type(value).__name__}; only a list or a dict can be mapped over"
            )
        lengths.append(len(value))
    return lengths[0] if kind == KWARGS else math.prod(lengths)


class MappedOperator(BaseOperator):
    """A task expanded at run time into one instance per element of `expand_input`.

    Holds the task's scheduling arguments like any operator; `unmap` builds the real
    operator of one map index with the partial arguments and that index's element.
    """

    def __init__(
        self,
        *,
        operator_class: type[BaseOperator],
        expand_input: ExpandInput,
        partial_kwargs: Mapping[str, Any],
        into: str | None = None,
        default_args: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.operator_class = operator_class
        self.expand_input = expand_input
        self.partial_kwargs = dict(partial_kwargs)
        #: the keyword argument the element goes into (`op_kwargs` for @task), or None
        self.into = into
        self._default_args = dict(default_args or {})
        self.template_fields = tuple(operator_class.template_fields)
        self.custom_operator_name = operator_class.custom_operator_name
        self.multiple_outputs = bool(self.partial_kwargs.get("multiple_outputs", False))
        super().__init__(default_args=default_args, **kwargs)

    @property
    def is_mapped(self) -> bool:
        return True

    def _post_init(self) -> None:
        for value in [*self.partial_kwargs.values(), *self.expand_input.xcom_args()]:
            for arg in iter_xcom_args(value):
                self.set_upstream(arg)

    def unmap(self, context: Mapping[str, Any]) -> BaseOperator:
        """The operator of this attempt's map index, placed where the mapped task is."""
        element = self.expand_input.element(context, context["ti"].map_index)
        kwargs = dict(self.partial_kwargs)
        if self.into is not None:
            kwargs[self.into] = {**kwargs.get(self.into, {}), **element}
        else:
            kwargs.update(element)
        label = self.task_id.rsplit(".", 1)[-1]
        operator = self.operator_class(task_id=label, default_args=self._default_args, **kwargs)
        for name in ("task_id", "task_group", "_group", "_own_params"):
            operator.__dict__[name] = self.__dict__[name]
        operator.__dict__["_dag"] = self._dag
        operator.__dict__["_upstream_task_ids"] = self._upstream_task_ids
        operator.__dict__["_downstream_task_ids"] = self._downstream_task_ids
        for name in _SCHEDULING_ARGS:
            operator.__dict__[name] = self.__dict__[name]
        return operator


#: Arguments the scheduler already applied from the mapped task: the unmapped copy keeps them.
_SCHEDULING_ARGS = ("retries", "pool", "pool_slots", "priority_weight", "queue", "trigger_rule")
_BASE_ARGS = frozenset(
    name
    for name in inspect.signature(BaseOperator.__init__).parameters
    if name not in {"self", "kwargs"}
)


def _check_names(owner: str, partial: Mapping[str, Any], mapped: Sequence[str]) -> None:
    both = sorted(set(partial) & set(mapped))
    if both:
        raise DagDefinitionError(
            f"{owner}: argument(s) {', '.join(map(repr, both))} given to both partial() and "
            "expand()"
        )


def mapping_spec(task: BaseOperator) -> dict[str, Any] | None:
    """The serialized mapping of a task: how to count its instances, or None if unmapped."""
    if isinstance(task, MappedOperator):
        expand_input, group = task.expand_input, None
    elif task.mapped_group is not None and task.dag is not None:
        expand_input = task.dag.task_group_dict[task.mapped_group].expand_input
        group = task.mapped_group
    else:
        return None
    return {"kind": expand_input.kind, "sources": expand_input.spec(), "group": group}


class _Partial:
    """The arguments `partial(...)` fixed, waiting for `expand(...)`/`expand_kwargs(...)`;
    subclasses build the mapped task."""

    owner: str
    fixed: dict[str, Any]

    def expand(self, **mapped: Any) -> XComArg:
        _check_names(self.owner, self.fixed, list(mapped))
        return self._mapped(ExpandInput(PRODUCT, mapped, self.owner), list(mapped))

    def expand_kwargs(self, value: Any) -> XComArg:
        expand_input = ExpandInput(KWARGS, value, self.owner)
        names = expand_input.names()
        _check_names(self.owner, self.fixed, names)
        return self._mapped(expand_input, names)

    def _mapped(self, expand_input: ExpandInput, names: list[str]) -> XComArg:
        raise NotImplementedError


class OperatorPartial(_Partial):
    """`SomeOperator.partial(task_id=..., fixed=...)`."""

    def __init__(self, operator_class: type[BaseOperator], kwargs: Mapping[str, Any]) -> None:
        if "task_id" not in kwargs:
            raise DagDefinitionError(f"{operator_class.__name__}.partial() needs a task_id")
        self.operator_class = operator_class
        self.fixed = dict(kwargs)
        self.owner = f"task {kwargs['task_id']!r}"

    def _mapped(self, expand_input: ExpandInput, names: list[str]) -> XComArg:
        kwargs = dict(self.fixed)
        base = {name: kwargs.pop(name) for name in list(kwargs) if name in _BASE_ARGS}
        base.pop("default_args", None)
        scheduling = {k: v for k, v in base.items() if k not in {"task_id", "dag", "task_group"}}
        operator = MappedOperator(
            operator_class=self.operator_class,
            expand_input=expand_input,
            partial_kwargs={**scheduling, **kwargs},
            **base,
        )
        return MappedOperatorOutput(operator)


class MappedOperatorOutput(XComArg):
    """What `Operator.partial(...).expand(...)` returns: the mapped task's output, which
    also reads as the task itself (`.output`, `.task_id`...), as Airflow's MappedOperator."""

    @property
    def output(self) -> XComArg:
        return XComArg(self.operator)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("operator", "key"):
            raise AttributeError(name)
        return getattr(self.operator, name)


class TaskPartial(_Partial):
    """`@task` function `.partial(fixed=...)`: the fixed arguments of every instance."""

    def __init__(self, decorator: _TaskDecorator, fn_kwargs: Mapping[str, Any]) -> None:
        self.decorator = decorator
        self.fixed = dict(fn_kwargs)
        self.owner = f"task {decorator.function.__name__!r}"

    def _mapped(self, expand_input: ExpandInput, names: list[str]) -> XComArg:
        if names:  # kwargs from a task's output are known only at run time
            self.decorator.check_call({**self.fixed, **dict.fromkeys(names)})
        return self.decorator.build(
            MappedOperator,
            operator_class=self.decorator.operator_class,
            expand_input=expand_input,
            into="op_kwargs",
            fn_kwargs=self.fixed,
        )


def expand_group(factory: Any, partial: Mapping[str, Any], kind: str, value: Any) -> Any:
    """Call a `@task_group` function once, as a group mapped over `value`: every task in
    it becomes mapped, and its arguments read the element of their map index."""
    from engine.sdk.task_group import TaskGroup

    owner = f"task group {factory.group_name!r}"
    expand_input = ExpandInput(kind, value if kind == KWARGS else dict(value), owner)
    names = expand_input.names() if kind == PRODUCT else factory.parameter_names(partial)
    _check_names(owner, partial, names)
    group: TaskGroup = factory.new_group()
    group.expand_input = expand_input
    arguments = {**partial, **{name: MappedArgument(group, name) for name in names}}
    with group:
        result = factory.function(**arguments)
    tasks = list(group.iter_tasks())
    for task in tasks:
        if isinstance(task, MappedOperator) or task.mapped_group is not None:
            raise DagDefinitionError(
                f"task {task.task_id!r}: a mapped task inside the mapped task group "
                f"{group.group_id!r} is not supported"
            )
        task.mapped_group = group.group_id
    sources = [arg.operator for arg in expand_input.xcom_args()]
    for root in group.roots:
        for source in sources:
            if source.task_id not in root.upstream_task_ids:
                source >> root
    return group if result is None else result
