"""Operators and their data flow: BaseOperator and XComArg (edges: engine.sdk.edges).

Edges are stored as task ids on both ends, so the graph can be read without the objects
(serialization) and a copy of an operator keeps its place in the graph. `default_args`
are applied to every constructor in an operator's class hierarchy, as Airflow's
apply_defaults does, so subclass arguments can be defaulted too.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from engine.exceptions import DagDefinitionError, TaskError
from engine.sdk.compat import LoggingMixin, deprecated
from engine.sdk.dag import DAG, check_id, current_dag, normalize_callbacks
from engine.sdk.edges import DependencyMixin, Label, chain
from engine.sdk.params import DagParam, ParamsDict
from engine.sdk.setup_teardown import SetupTeardownScope
from engine.sdk.task_group import TaskGroup, current_task_group, task_group, unique_id
from engine.sdk.trigger_rules import TriggerRule

__all__ = [
    "BaseOperator",
    "DependencyMixin",
    "Label",
    "TaskGroup",
    "XComArg",
    "chain",
    "task_group",
]

log = logging.getLogger("engine.task")

XCOM_RETURN_KEY = "return_value"
WEIGHT_RULES = ("downstream", "upstream", "absolute")
_NO_DEFAULTS = frozenset({"self", "task_id", "dag", "task_group", "default_args", "params"})
_MISSING = object()


class XComArg(DependencyMixin):
    """A task's future output: pass it to another task to create an edge and the data flow."""

    def __init__(self, operator: BaseOperator, key: str = XCOM_RETURN_KEY) -> None:
        self.operator = operator
        self.key = key

    def __repr__(self) -> str:
        return f"XComArg({self.operator.task_id!r}, key={self.key!r})"

    def __str__(self) -> str:
        return "{{ ti.xcom_pull(task_ids=%r, key=%r) }}" % (self.operator.task_id, self.key)  # noqa: UP031

    def __getitem__(self, key: str) -> XComArg:
        return XComArg(self.operator, key)

    def __iter__(self) -> Iterator[Any]:
        # without this, __getitem__ would make the object iterable forever
        raise TypeError("an XComArg is not iterable; its value is known only when the task runs")

    def __deepcopy__(self, memo: dict[int, Any]) -> XComArg:
        return self  # immutable reference to a task

    @property
    def roots(self) -> list[BaseOperator]:
        return [self.operator]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [self.operator]

    @property
    def is_setup(self) -> bool:
        return self.operator.is_setup

    @property
    def is_teardown(self) -> bool:
        return self.operator.is_teardown

    def as_setup(self) -> XComArg:
        """Mark the task as a setup (see `BaseOperator.as_setup`)."""
        self.operator.as_setup()
        return self

    def as_teardown(
        self, *, setups: Any = None, on_failure_fail_dagrun: bool | None = None
    ) -> XComArg:
        """Mark the task as a teardown (see `BaseOperator.as_teardown`)."""
        self.operator.as_teardown(setups=setups, on_failure_fail_dagrun=on_failure_fail_dagrun)
        return self

    def __enter__(self) -> SetupTeardownScope:
        return self.operator.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.operator.__exit__(*exc)

    def resolve(self, context: Mapping[str, Any]) -> Any:
        """The pushed value, pulled through the running task instance."""
        task_id = self.operator.task_id
        ti = context["ti"]
        value = ti.xcom_pull(task_ids=task_id, key=self.key, default=_MISSING)
        if value is not _MISSING:
            return value
        if self.operator.is_mapped and ti.map_index_to_pull(task_id, None) is None:
            return []  # a mapped task with no instance that pushed (e.g. zero elements)
        if self.key == XCOM_RETURN_KEY or getattr(self.operator, "multiple_outputs", False):
            return None
        raise TaskError(f"XCom {self.key!r} of task {task_id!r} not found")


class MappedArgument:
    """An argument of a mapped task group's function: the group's element for the map index
    of the task instance that reads it."""

    def __init__(self, group: Any, name: str) -> None:
        self.group = group
        self.name = name

    def __repr__(self) -> str:
        return f"MappedArgument({self.group.group_id!r}, {self.name!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> MappedArgument:
        return self

    def resolve(self, context: Mapping[str, Any]) -> Any:
        element = self.group.expand_input.element(context, context["ti"].map_index)
        if self.name not in element:
            raise TaskError(
                f"mapped task group {self.group.group_id!r}: element has no {self.name!r}"
            )
        return element[self.name]


def iter_xcom_args(value: Any) -> Iterator[XComArg]:
    """XComArgs inside a value, also nested in lists, tuples, sets and dict values."""
    if isinstance(value, XComArg):
        yield value
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from iter_xcom_args(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_xcom_args(item)


def resolve_args(value: Any, context: Mapping[str, Any]) -> Any:
    """A copy of `value` with XComArgs and DagParams replaced by their run-time values."""
    if isinstance(value, XComArg | DagParam | MappedArgument):
        return value.resolve(context)
    if isinstance(value, list):
        return [resolve_args(item, context) for item in value]
    if isinstance(value, tuple):
        items = [resolve_args(item, context) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, set | frozenset):
        return type(value)(resolve_args(item, context) for item in value)
    if isinstance(value, dict):
        return {key: resolve_args(item, context) for key, item in value.items()}
    return value


def unique_task_id(task_id: str, dag: DAG | None, group: TaskGroup | None) -> str:
    """`task_id`, or `task_id__N` if the DAG has it already (Airflow's TaskFlow rule)."""
    if dag is None:
        return task_id
    full = group.child_id(task_id) if group is not None else task_id
    if full not in dag.task_dict and full not in dag.task_group_dict:
        return task_id  # the common case, without copying every id (O(n²) for n tasks)
    return unique_id(task_id, full, set(dag.task_dict) | set(dag.task_group_dict))


def _apply_defaults(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap an operator __init__ so unset arguments come from the DAG's/group's default_args.

    Explicit arguments win over the task group's default_args, which win over the DAG's.
    """
    signature = inspect.signature(init)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [
        p.name
        for p in signature.parameters.values()
        if p.kind in kinds and p.name not in _NO_DEFAULTS
    ]
    passes_defaults = "default_args" in signature.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )

    @functools.wraps(init)
    def wrapper(self: BaseOperator, *args: Any, **kwargs: Any) -> None:
        if args:
            raise TypeError(f"{type(self).__name__}() takes keyword arguments only")
        group = kwargs.get("task_group")
        dag = kwargs.get("dag") or (group.dag if group is not None else current_dag())
        if group is None and dag is not None:
            group = current_task_group(dag)
        defaults: dict[str, Any] = {}
        if dag is not None:
            defaults.update(dag.default_args)
        if group is not None:
            defaults.update(group.default_args)
        defaults.update(kwargs.pop("default_args", None) or {})
        for name in names:
            if name not in kwargs and name in defaults:
                kwargs[name] = defaults[name]
        if passes_defaults:
            kwargs["default_args"] = defaults
        depth = self.__dict__.get("_init_depth", 0)
        self.__dict__["_init_depth"] = depth + 1
        try:
            init(self, *args, **kwargs)
        finally:
            if depth:
                self.__dict__["_init_depth"] = depth
            else:
                self.__dict__.pop("_init_depth", None)
        if depth == 0:
            self._post_init()

    return wrapper


def _weight_rule(value: Any, task_id: str) -> tuple[str, Any]:
    """A built-in weight rule by name, or a registered custom strategy (engine.sdk.priority)."""
    if isinstance(value, str) and value in WEIGHT_RULES:
        return value, None
    from engine.sdk.priority import resolve_weight_rule

    return resolve_weight_rule(value, task_id)


def _check(condition: bool, task_id: str, message: str) -> None:
    if not condition:
        raise DagDefinitionError(f"task {task_id!r}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _safe_copy(value: Any) -> Any:
    try:
        return copy.deepcopy(value)
    except Exception:  # objects that refuse copying are shared instead
        try:
            return copy.copy(value)
        except Exception:
            return value


class BaseOperator(LoggingMixin, DependencyMixin):
    """Base of every task. Subclasses implement `execute(self, context)`.

    `template_fields` names attributes rendered with Jinja before `execute`;
    `template_ext` lists suffixes of string values that name template files.
    """

    template_fields: Sequence[str] = ()
    template_ext: Sequence[str] = ()
    #: attributes that copies share instead of deep-copying (callables, handles)
    shallow_copy_attrs: Sequence[str] = ()
    is_sensor = False
    multiple_outputs = False
    #: creates a resource other tasks use (see `as_setup`)
    is_setup = False
    #: removes a setup's resource, even when the work failed (see `as_teardown`)
    is_teardown = False
    #: a teardown whose failure fails the run (teardowns are ignored by default)
    on_failure_fail_dagrun = False
    custom_operator_name: str | None = None
    #: the mapped task group this task is expanded with (set by `engine.sdk.mapping`)
    mapped_group: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if isinstance(cls.template_fields, str) or isinstance(cls.template_ext, str):
            raise TypeError(
                f"{cls.__name__}.template_fields and template_ext must be sequences of "
                f"strings, e.g. ('bash_command',), not a single string"
            )
        if "__init__" in cls.__dict__:
            cls.__init__ = _apply_defaults(cls.__dict__["__init__"])  # type: ignore[method-assign]

    def __init__(
        self,
        *,
        task_id: str,
        owner: str | None = None,
        retries: int = 0,
        retry_delay: timedelta = timedelta(seconds=300),
        retry_exponential_backoff: bool = False,
        max_retry_delay: timedelta | None = None,
        execution_timeout: timedelta | None = None,
        sla: timedelta | None = None,
        pool: str = "default_pool",
        pool_slots: int = 1,
        priority_weight: int = 1,
        weight_rule: str = "downstream",
        queue: str = "default",
        trigger_rule: TriggerRule | str = TriggerRule.ALL_SUCCESS,
        depends_on_past: bool = False,
        wait_for_downstream: bool = False,
        max_active_tis_per_dag: int | None = None,
        max_active_tis_per_dagrun: int | None = None,
        on_execute_callback: Any = None,
        on_success_callback: Any = None,
        on_failure_callback: Any = None,
        on_retry_callback: Any = None,
        on_skipped_callback: Any = None,
        doc: str | None = None,
        doc_md: str | None = None,
        do_xcom_push: bool = True,
        params: Mapping[str, Any] | None = None,
        dag: DAG | None = None,
        task_group: TaskGroup | None = None,
        default_args: Mapping[str, Any] | None = None,
        task_display_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_id(task_id, "task_id")
        if "provide_context" in kwargs:  # Airflow 1/2: the context is always provided
            kwargs.pop("provide_context")
            deprecated("provide_context=True", "nothing: remove it (the context is passed)")
        if kwargs:
            raise DagDefinitionError(
                f"invalid arguments for {type(self).__name__} {task_id!r}: "
                f"{', '.join(sorted(kwargs))}"
            )
        if task_group is not None and dag is None:
            dag = task_group.dag
        dag = dag if dag is not None else current_dag()
        if task_group is None and dag is not None:
            task_group = current_task_group(dag)
        if task_group is not None and task_group.dag is not dag:
            raise DagDefinitionError(
                f"task {task_id!r}: task group {task_group.group_id!r} belongs to another DAG"
            )
        full_id = task_group.child_id(task_id) if task_group is not None else task_id
        check_id(full_id, "task_id")
        self.task_id = full_id
        if task_display_name is not None and (
            not isinstance(task_display_name, str) or not task_display_name.strip()
        ):
            raise DagDefinitionError(
                f"task {task_id!r}: task_display_name must be a non-empty string"
            )
        self.task_display_name = task_display_name or full_id
        self._validate_and_set(locals())
        self._dag: DAG | None = None
        self._group = task_group
        self.task_group: str | None = task_group.group_id if task_group is not None else None
        self._upstream_task_ids: set[str] = set()
        self._downstream_task_ids: set[str] = set()
        self._edge_labels: dict[str, str] = {}
        self._own_params = ParamsDict((default_args or {}).get("params"))
        for name, value in (params or {}).items():
            self._own_params[name] = value
        if dag is not None:
            dag.add_task(self)
            if task_group is not None:
                task_group._add_child(self)

    def _validate_and_set(self, args: Mapping[str, Any]) -> None:
        task_id = self.task_id
        dag = args["dag"]
        self.owner = args["owner"] or (dag.owner if dag is not None else "dagwatch")
        retries = args["retries"]
        _check(
            _is_int(retries) and retries >= 0,
            task_id,
            f"retries must be an int >= 0, not {retries!r}",
        )
        self.retries = retries
        for name in ("retry_delay", "max_retry_delay", "execution_timeout", "sla"):
            value = args[name]
            optional = name != "retry_delay"
            _check(
                isinstance(value, timedelta) or (optional and value is None),
                task_id,
                f"{name} must be a timedelta{' or None' if optional else ''}, not {value!r}",
            )
            setattr(self, name, value)
        self.retry_exponential_backoff = bool(args["retry_exponential_backoff"])
        for name in ("pool", "queue"):
            _check(isinstance(args[name], str) and args[name], task_id, f"{name} must be a string")
            setattr(self, name, args[name])
        slots, weight = args["pool_slots"], args["priority_weight"]
        _check(
            _is_int(slots) and slots >= 1, task_id, f"pool_slots must be an int >= 1, not {slots!r}"
        )
        _check(_is_int(weight), task_id, f"priority_weight must be an int, not {weight!r}")
        self.pool_slots: int = slots
        self.priority_weight: int = weight
        self.weight_rule, self._weight_strategy = _weight_rule(args["weight_rule"], task_id)
        try:
            self.trigger_rule = TriggerRule(args["trigger_rule"])
        except ValueError:
            allowed = ", ".join(rule.value for rule in TriggerRule)
            raise DagDefinitionError(
                f"task {task_id!r}: invalid trigger_rule {args['trigger_rule']!r}; "
                f"allowed: {allowed}"
            ) from None
        # as in Airflow, waiting for the previous run's downstream implies waiting for it
        self.wait_for_downstream = bool(args["wait_for_downstream"])
        self.depends_on_past = bool(args["depends_on_past"]) or self.wait_for_downstream
        for name in ("max_active_tis_per_dag", "max_active_tis_per_dagrun"):
            limit = args[name]
            _check(
                limit is None or (_is_int(limit) and limit >= 1),
                task_id,
                f"{name} must be None or an int >= 1, not {limit!r}",
            )
            setattr(self, name, limit)
        for kind in ("execute", "success", "failure", "retry", "skipped"):
            name = f"on_{kind}_callback"
            setattr(self, name, normalize_callbacks(args[name], f"task {task_id!r}: {name}"))
        self.doc, self.doc_md = args["doc"], args["doc_md"]
        self.do_xcom_push = bool(args["do_xcom_push"])

    def _post_init(self) -> None:
        """After the outermost __init__: XComArgs in templated fields become upstream edges."""
        for name in self.template_fields:
            for arg in iter_xcom_args(getattr(self, name, None)):
                self.set_upstream(arg)

    def __repr__(self) -> str:
        return f"<Task({type(self).__name__}): {self.task_id}>"

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """The arguments every mapped instance shares; then `.expand(...)` (Airflow)."""
        from engine.sdk.mapping import OperatorPartial

        return OperatorPartial(cls, kwargs)

    @property
    def is_mapped(self) -> bool:
        """Whether this task runs as several instances, one per map index."""
        return self.mapped_group is not None

    # -- graph --------------------------------------------------------------------------

    @property
    def dag(self) -> DAG | None:
        return self._dag

    @dag.setter
    def dag(self, dag: DAG) -> None:
        dag.add_task(self)

    @property
    def dag_id(self) -> str | None:
        return self._dag.dag_id if self._dag is not None else None

    @property
    def params(self) -> ParamsDict:
        """The DAG's params overlaid with this task's own."""
        merged = self._dag.params.copy() if self._dag is not None else ParamsDict()
        for name, param in self._own_params.items():
            merged[name] = param
        return merged

    @property
    def output(self) -> XComArg:
        """This task's return value, for passing to other tasks."""
        return XComArg(self)

    @property
    def roots(self) -> list[BaseOperator]:
        return [self]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [self]

    @property
    def upstream_task_ids(self) -> set[str]:
        return self._upstream_task_ids

    @property
    def downstream_task_ids(self) -> set[str]:
        return self._downstream_task_ids

    def _add_edge(self, other: BaseOperator, label: str | None) -> None:
        mine, theirs = self._dag, other._dag
        if mine is not None and theirs is not None and mine is not theirs:
            raise DagDefinitionError(
                f"cannot make task {self.task_id!r} (DAG {mine.dag_id!r}) upstream of task "
                f"{other.task_id!r} (DAG {theirs.dag_id!r}): tasks of different DAGs cannot "
                "depend on each other"
            )
        if mine is None and theirs is not None:
            theirs.add_task(self)
        elif theirs is None and mine is not None:
            mine.add_task(other)
        self._downstream_task_ids.add(other.task_id)
        other._upstream_task_ids.add(self.task_id)
        if label is not None:
            self._edge_labels[other.task_id] = label

    def _in_dag_order(self, ids: Iterable[str]) -> list[BaseOperator]:
        if self._dag is None:
            return []
        wanted = set(ids)
        return [t for t in self._dag.task_dict.values() if t.task_id in wanted]

    @property
    def upstream_list(self) -> list[BaseOperator]:
        return self._in_dag_order(self._upstream_task_ids)

    @property
    def downstream_list(self) -> list[BaseOperator]:
        return self._in_dag_order(self._downstream_task_ids)

    def get_direct_relative_ids(self, upstream: bool = False) -> set[str]:
        return set(self._upstream_task_ids if upstream else self._downstream_task_ids)

    def get_flat_relative_ids(self, upstream: bool = False) -> set[str]:
        """Ids of all tasks reachable downstream (or upstream) of this one."""
        if self._dag is None:
            return self.get_direct_relative_ids(upstream)
        tasks = self._dag.task_dict
        found: set[str] = set()
        todo = [self.task_id]
        while todo:
            task = tasks.get(todo.pop())
            if task is None:
                continue
            for relative in task.get_direct_relative_ids(upstream):
                if relative not in found:
                    found.add(relative)
                    todo.append(relative)
        found.discard(self.task_id)
        return found

    #: Same as `get_flat_relative_ids` (ids, not operators).
    get_flat_relatives = get_flat_relative_ids

    @property
    def priority_weight_total(self) -> int:
        """The priority the scheduler uses: Airflow's weight_rule applied (a custom
        strategy's weight is computed here, when the DAG is parsed)."""
        strategy = getattr(self, "_weight_strategy", None)
        if strategy is not None:
            from engine.sdk.priority import strategy_weight

            return strategy_weight(strategy, self)
        if self.weight_rule == "absolute" or self._dag is None:
            return self.priority_weight
        relatives = self.get_flat_relative_ids(upstream=self.weight_rule == "upstream")
        tasks = self._dag.task_dict
        return self.priority_weight + sum(tasks[t].priority_weight for t in relatives if t in tasks)

    # -- setup and teardown -------------------------------------------------------------

    def as_setup(self) -> BaseOperator:
        """Mark this task as a setup: it creates what its work tasks use."""
        self.is_setup = True
        return self

    def as_teardown(
        self, *, setups: Any = None, on_failure_fail_dagrun: bool | None = None
    ) -> BaseOperator:
        """Mark this task as a teardown, run once its upstream is done if a setup succeeded.

        `setups` (tasks or XComArgs) become setups upstream of it. Its failure does not
        fail the run unless `on_failure_fail_dagrun=True` (Airflow's semantics).
        """
        self.is_teardown = True
        self.trigger_rule = TriggerRule.ALL_DONE_SETUP_SUCCESS
        if on_failure_fail_dagrun is not None:
            self.on_failure_fail_dagrun = bool(on_failure_fail_dagrun)
        if setups is not None:
            for setup in setups if isinstance(setups, list | tuple | set) else [setups]:
                setup.as_setup()
                setup >> self
        return self

    def __enter__(self) -> SetupTeardownScope:
        """`with delete.as_teardown(setups=create): ...` wires the block's tasks between them."""
        if self.is_teardown:
            tasks = self._in_dag_order(self._upstream_task_ids)
            scope = SetupTeardownScope([t for t in tasks if t.is_setup], [self])
        elif self.is_setup:
            tasks = self._in_dag_order(self._downstream_task_ids)
            scope = SetupTeardownScope([self], [t for t in tasks if t.is_teardown])
        else:
            raise DagDefinitionError(
                f"task {self.task_id!r}: only setup and teardown tasks can be used with `with`"
            )
        self._scopes = [*getattr(self, "_scopes", []), scope]
        return scope.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._scopes.pop().__exit__(*exc)

    # -- execution ----------------------------------------------------------------------

    def execute(self, context: Mapping[str, Any]) -> Any:
        """Do the work; the return value is pushed as XCom "return_value"."""
        raise NotImplementedError(f"{type(self).__name__} must implement execute(self, context)")

    def on_kill(self) -> None:
        """Called on timeout or termination: stop whatever execute started."""

    def render_template(
        self, content: Any, context: Mapping[str, Any], jinja_env: Any = None
    ) -> Any:
        """Render `content` (a string, a template file name with one of `template_ext`,
        or a container of them) with the task's context, as Airflow's operators can."""
        from engine.sdk.templating import make_jinja_env, render_value

        env = jinja_env if jinja_env is not None else make_jinja_env(self.dag)
        return render_value(content, context, env, tuple(self.template_ext or ()))

    def render_template_fields(self, context: Mapping[str, Any], jinja_env: Any = None) -> None:
        """Render every template field in place (call on a `prepare_for_execution` copy)."""
        from engine.sdk.templating import render_template_fields

        render_template_fields(self, context, jinja_env)

    def prepare_for_execution(self) -> BaseOperator:
        """A shallow copy whose template field values are copies, safe to render."""
        other = copy.copy(self)
        for name in self.template_fields:
            if name in self.__dict__:
                other.__dict__[name] = _safe_copy(self.__dict__[name])
            elif hasattr(self, name):
                setattr(other, name, _safe_copy(getattr(self, name)))
        return other

    def __deepcopy__(self, memo: dict[int, Any]) -> BaseOperator:
        cls = type(self)
        result = cls.__new__(cls)
        memo[id(self)] = result
        shared = {"_dag", "_group", *self.shallow_copy_attrs}
        for key, value in self.__dict__.items():
            result.__dict__[key] = value if key in shared else copy.deepcopy(value, memo)
        return result


BaseOperator.__init__ = _apply_defaults(BaseOperator.__init__)  # type: ignore[method-assign]
