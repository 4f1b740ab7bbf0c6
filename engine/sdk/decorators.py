"""TaskFlow: `@task` turns a function into a task factory; calling it returns an XComArg.

Arguments may be XComArgs of other tasks (also inside lists and dicts): each creates an
upstream edge and is replaced by the pulled value when the task runs. Parameters named
like context keys (ti, ds, params, ...) are filled from the context when not given.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.exceptions import DagDefinitionError, TaskError
from engine.sdk.dag import current_dag
from engine.sdk.mapping import TaskPartial
from engine.sdk.operators import (
    branch_skip_ids,
    call_python,
    check_templates_exts,
    short_circuit_skip_ids,
)
from engine.sdk.task_group import current_task_group
from engine.sdk.tasks import BaseOperator, XComArg, resolve_args, unique_task_id

#: Names the runner puts in the context; a task function may declare them without a value.
KNOWN_CONTEXT_KEYS = frozenset(
    {
        "conf",
        "conn",
        "dag",
        "dag_run",
        "data_interval_end",
        "data_interval_start",
        "ds",
        "ds_nodash",
        "logical_date",
        "macros",
        "params",
        "run_id",
        "task",
        "task_instance",
        "templates_dict",
        "ti",
        "try_number",
        "ts",
        "ts_nodash",
        "ts_nodash_with_tz",
        "var",
    }
)


def _check_call(
    function: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], task_id: str
) -> None:
    """Fail at definition time when the call cannot match the function's signature."""
    signature = inspect.signature(function)
    try:
        bound = signature.bind_partial(*args, **kwargs)
    except TypeError as exc:
        raise DagDefinitionError(
            f"task {task_id!r}: invalid arguments for {function.__name__}(): {exc}"
        ) from None
    kinds = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    missing = [
        p.name
        for p in signature.parameters.values()
        if p.kind in kinds
        and p.default is p.empty
        and p.name not in bound.arguments
        and p.name not in KNOWN_CONTEXT_KEYS
    ]
    if missing:
        raise DagDefinitionError(
            f"task {task_id!r}: {function.__name__}() is missing argument(s): "
            f"{', '.join(map(repr, missing))}"
        )


def infer_multiple_outputs(function: Callable[..., Any]) -> bool:
    """True when the function is annotated to return a dict/Mapping (Airflow's rule)."""
    try:
        annotation = typing.get_type_hints(function).get("return")
    except Exception:  # unresolvable string annotations: look at the text
        raw = inspect.signature(function).return_annotation
        text = raw.strip("'\" ") if isinstance(raw, str) else ""
        name = text.split("[")[0].split(".")[-1]
        return name in {"dict", "Dict", "Mapping"}
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, collections.abc.Mapping)


class _PythonDecoratedOperator(BaseOperator):
    """The operator behind `@task`: resolves XComArgs, then calls the function."""

    template_fields: Sequence[str] = ("op_args", "op_kwargs")
    custom_operator_name = "@task"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Sequence[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        multiple_outputs: bool = False,
        templates_exts: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.multiple_outputs = bool(multiple_outputs)
        if templates_exts is not None:  # string arguments ending so name template files
            self.template_ext = check_templates_exts(templates_exts, kwargs.get("task_id", "?"))
        _check_call(python_callable, self.op_args, self.op_kwargs, kwargs.get("task_id", "?"))
        super().__init__(**kwargs)

    def execute(self, context: Mapping[str, Any]) -> Any:
        op_args = resolve_args(self.op_args, context)
        op_kwargs = resolve_args(self.op_kwargs, context)
        result = call_python(self.python_callable, op_args, op_kwargs, context)
        if self.multiple_outputs and result is not None:
            if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
                raise TaskError(
                    f"task {self.task_id!r} has multiple_outputs=True but returned "
                    f"{type(result).__name__}, not a dict with string keys"
                )
        return result


class _BranchPythonDecoratedOperator(_PythonDecoratedOperator):
    custom_operator_name = "@task.branch"

    def execute(self, context: Mapping[str, Any]) -> Any:
        result = super().execute(context)
        context["ti"].skip_downstream(branch_skip_ids(self, result))
        return result


class _ShortCircuitDecoratedOperator(_PythonDecoratedOperator):
    custom_operator_name = "@task.short_circuit"

    def __init__(self, *, ignore_downstream_trigger_rules: bool = True, **kwargs: Any) -> None:
        self.ignore_downstream_trigger_rules = ignore_downstream_trigger_rules
        super().__init__(**kwargs)

    def execute(self, context: Mapping[str, Any]) -> Any:
        condition = super().execute(context)
        if not condition:
            skip = short_circuit_skip_ids(self, self.ignore_downstream_trigger_rules)
            context["ti"].skip_downstream(skip)
        return condition


class _TaskDecorator:
    """A decorated function: call it in a DAG to add a task; `.function` is the original."""

    def __init__(
        self,
        function: Callable[..., Any],
        operator_class: type[_PythonDecoratedOperator],
        kwargs: Mapping[str, Any],
        multiple_outputs: bool | None,
        role: Mapping[str, Any] | None = None,
    ) -> None:
        if not callable(function):
            raise TypeError(f"@task must decorate a function, not {function!r}")
        functools.update_wrapper(self, function)
        self.function = function
        self.operator_class = operator_class
        self.kwargs = dict(kwargs)
        self._multiple_outputs = multiple_outputs
        #: {"setup": True} or {"teardown": True, "on_failure_fail_dagrun": ...}
        self.role = dict(role or {})

    @property
    def multiple_outputs(self) -> bool:
        if self._multiple_outputs is None:
            return infer_multiple_outputs(self.function)
        return self._multiple_outputs

    def __repr__(self) -> str:
        return f"<{self.operator_class.custom_operator_name} {self.function.__qualname__}>"

    def __call__(self, *args: Any, **kwargs: Any) -> XComArg:
        return self.build(self.operator_class, op_args=args, op_kwargs=kwargs)

    def partial(self, **kwargs: Any) -> TaskPartial:
        """The arguments every mapped instance shares; then `.expand(...)` (Airflow)."""
        return TaskPartial(self, kwargs)

    def expand(self, **mapped: Any) -> XComArg:
        """One task instance per element (per combination, for several arguments)."""
        return self.partial().expand(**mapped)

    def expand_kwargs(self, value: Any) -> XComArg:
        """One task instance per dict of keyword arguments in `value`."""
        return self.partial().expand_kwargs(value)

    def check_call(self, kwargs: Mapping[str, Any]) -> None:
        """Fail at definition time when these keyword arguments cannot call the function."""
        _check_call(self.function, [], kwargs, self.function.__name__)

    def build(self, operator_type: type[BaseOperator], **arguments: Any) -> XComArg:
        """Add the task to the current DAG: `operator_type` is this decorator's operator,
        or MappedOperator (then `fn_kwargs` are the arguments partial() fixed)."""
        options = dict(self.kwargs)
        group = options.get("task_group")
        dag = options.get("dag") or (group.dag if group is not None else current_dag())
        if group is None:
            group = current_task_group(dag)
        task_id = unique_task_id(options.pop("task_id", self.function.__name__), dag, group)
        if inspect.getdoc(self.function):
            options.setdefault("doc_md", inspect.getdoc(self.function))
        if "fn_kwargs" in arguments:  # mapped: the unmapped copy is built per map index
            shared = {k: v for k, v in options.items() if k not in {"dag", "task_group"}}
            arguments["partial_kwargs"] = {
                "python_callable": self.function,
                "op_kwargs": arguments.pop("fn_kwargs"),
                "multiple_outputs": self.multiple_outputs,
                **shared,
            }
        else:
            arguments.update(python_callable=self.function, multiple_outputs=self.multiple_outputs)
        operator = operator_type(task_id=task_id, **arguments, **options)
        if self.role.get("setup"):
            operator.as_setup()
        if self.role.get("teardown"):
            operator.as_teardown(on_failure_fail_dagrun=self.role.get("on_failure_fail_dagrun"))
        return XComArg(operator)

    def override(self, **kwargs: Any) -> _TaskDecorator:
        """The same task with some operator arguments changed (task_id, retries, ...)."""
        multiple_outputs = kwargs.pop("multiple_outputs", self._multiple_outputs)
        return _TaskDecorator(
            self.function,
            self.operator_class,
            {**self.kwargs, **kwargs},
            multiple_outputs,
            self.role,
        )


class _TaskDecoratorFactory:
    """`@task`, `@task()` and `@task(retries=2, multiple_outputs=True, ...)`."""

    def __init__(self, operator_class: type[_PythonDecoratedOperator]) -> None:
        self.operator_class = operator_class

    def __call__(
        self,
        python_callable: Callable[..., Any] | None = None,
        *,
        multiple_outputs: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        def decorate(function: Callable[..., Any]) -> _TaskDecorator:
            return _TaskDecorator(function, self.operator_class, kwargs, multiple_outputs)

        if python_callable is not None:
            return decorate(python_callable)
        return decorate


class _TaskDecoratorCollection(_TaskDecoratorFactory):
    """`task`, with `task.python`, `task.branch` and `task.short_circuit`."""

    def __init__(self) -> None:
        super().__init__(_PythonDecoratedOperator)
        self.python = _TaskDecoratorFactory(_PythonDecoratedOperator)
        self.branch = _TaskDecoratorFactory(_BranchPythonDecoratedOperator)
        self.short_circuit = _TaskDecoratorFactory(_ShortCircuitDecoratedOperator)


task = _TaskDecoratorCollection()


def _with_role(function: Any, role: dict[str, Any]) -> _TaskDecorator:
    """A `@task` (made from a plain function if need be) whose tasks take `role`."""
    if not isinstance(function, _TaskDecorator):
        function = task(function)
    return _TaskDecorator(
        function.function,
        function.operator_class,
        function.kwargs,
        function._multiple_outputs,
        {**function.role, **role},
    )


def setup(python_callable: Callable[..., Any]) -> _TaskDecorator:
    """`@setup` (over a function or a `@task`): its tasks are setups (`as_setup`)."""
    return _with_role(python_callable, {"setup": True})


def teardown(
    python_callable: Callable[..., Any] | None = None, *, on_failure_fail_dagrun: bool = False
) -> Any:
    """`@teardown` or `@teardown(on_failure_fail_dagrun=True)`: its tasks are teardowns.

    Wire the setups with `.as_teardown(setups=...)` on the call, or `setup_call >>
    teardown_call`, as in Airflow.
    """
    role = {"teardown": True, "on_failure_fail_dagrun": on_failure_fail_dagrun}
    if python_callable is not None:
        return _with_role(python_callable, role)
    return lambda function: _with_role(function, role)
