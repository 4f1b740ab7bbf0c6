"""The built-in operators: Python, Bash, Empty, branching, short-circuit and latest-only.

Branching never changes other task instances itself: it asks the runner, through
`context["ti"].skip_downstream(task_ids)`, to skip them once this attempt succeeds.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from engine.exceptions import DagDefinitionError, SkipTask, TaskError
from engine.sdk.compat import DEPRECATED_CONTEXT, lazy_values, names_in_module_of, warn_context_key
from engine.sdk.schedules import Timetable, coerce_utc
from engine.sdk.tasks import BaseOperator

log = logging.getLogger("engine.task")


def context_kwargs(
    python_callable: Callable[..., Any],
    op_args: Sequence[Any],
    available: Mapping[str, Any],
) -> dict[str, Any]:
    """The keyword arguments to call `python_callable` with (Airflow's determine_kwargs).

    A function with **kwargs gets everything available (context and op_kwargs); other
    functions get only the names they declare.
    """
    signature = inspect.signature(python_callable)
    names = list(signature.parameters)
    for name in names[: len(op_args)]:
        if name in available:
            raise TaskError(
                f"{getattr(python_callable, '__name__', python_callable)}(): argument {name!r} "
                "is given positionally but is also a context key or keyword argument"
            )
    for name in names:
        if name in DEPRECATED_CONTEXT and name in available:  # an Airflow 2 variable
            warn_context_key(name, available)
    takes_all = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    wanted = set(names[len(op_args) :])
    if takes_all:  # what the function's module reads from its **context
        wanted |= names_in_module_of(python_callable)
    computed = lazy_values([n for n in wanted if n not in available], available)
    if computed:  # Airflow 2 variables, computed for the callables that ask for them
        available = {**available, **computed}
        for name in computed:
            warn_context_key(name, available)
    if takes_all:
        return dict(available)
    return {name: available[name] for name in names if name in available}


def call_python(
    python_callable: Callable[..., Any],
    op_args: Sequence[Any],
    op_kwargs: Mapping[str, Any],
    context: Mapping[str, Any],
    **extra: Any,
) -> Any:
    """Call with op_args, op_kwargs and the context values the callable asks for."""
    try:
        inspect.signature(python_callable)
    except (TypeError, ValueError):  # some builtins have no signature: no context for them
        return python_callable(*op_args, **op_kwargs)
    available = {**context, **extra, **op_kwargs}
    return python_callable(*op_args, **context_kwargs(python_callable, op_args, available))


def check_templates_exts(value: Any, task_id: str) -> tuple[str, ...]:
    """`templates_exts=`: suffixes of argument strings that name template files."""
    items = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(item, str) and item.startswith(".") for item in items):
        raise DagDefinitionError(
            f"task {task_id!r}: templates_exts must be a list of suffixes such as ['.sql'], "
            f"not {value!r}"
        )
    return items


def _check_callable(python_callable: Any, task_id: str) -> None:
    if not callable(python_callable):
        raise DagDefinitionError(
            f"task {task_id!r}: python_callable must be callable, not {python_callable!r}"
        )


def branch_skip_ids(task: BaseOperator, result: Any) -> list[str]:
    """Direct downstream task ids a branch that chose `result` must skip (Airflow's rule).

    `result` is a task id, a task group id (meaning its root tasks), a list of them, or
    None (follow nothing). A direct downstream task that is also downstream of a chosen
    task is not skipped (the "join" of an empty branch).
    """
    if result is None:
        chosen_ids: list[str] = []
    elif isinstance(result, str):
        chosen_ids = [result]
    elif isinstance(result, Iterable) and all(isinstance(item, str) for item in result):
        chosen_ids = list(result)
    else:
        raise TaskError(
            f"task {task.task_id!r}: a branch must return a task id, a task group id, a list "
            f"of them or None, not {result!r}"
        )
    dag = task.dag
    if dag is None:
        raise TaskError(f"task {task.task_id!r}: a branching task must belong to a DAG")
    chosen: set[str] = set()
    invalid = []
    for branch in chosen_ids:
        if branch in dag.task_group_dict:
            chosen.update(t.task_id for t in dag.task_group_dict[branch].roots)
        elif branch in dag.task_dict:
            chosen.add(branch)
        else:
            invalid.append(branch)
    if invalid:
        raise TaskError(
            f"task {task.task_id!r}: branch returned unknown task id(s) "
            f"{', '.join(map(repr, invalid))}; downstream tasks are: "
            f"{', '.join(sorted(task.downstream_task_ids)) or '(none)'}"
        )
    keep = set(chosen)
    for task_id in chosen:
        keep |= dag.task_dict[task_id].get_flat_relative_ids(upstream=False)
    return [t.task_id for t in task.downstream_list if t.task_id not in keep]


def short_circuit_skip_ids(task: BaseOperator, ignore_downstream_trigger_rules: bool) -> list[str]:
    """Everything downstream, or only the direct downstream tasks (then trigger rules decide)."""
    ids: Collection[str] = (
        task.get_flat_relative_ids(upstream=False)
        if ignore_downstream_trigger_rules
        else task.downstream_task_ids
    )
    if task.dag is None:
        return sorted(ids)
    return [task_id for task_id in task.dag.task_dict if task_id in ids]


class EmptyOperator(BaseOperator):
    """Does nothing; a join or fork point in the graph."""

    def execute(self, context: Mapping[str, Any]) -> None:
        return None


class DummyOperator(EmptyOperator):
    """Airflow 2's name of EmptyOperator (deprecated there and here)."""

    def __init__(self, **kwargs: Any) -> None:
        from engine.sdk.compat import deprecated

        deprecated("DummyOperator", "EmptyOperator")
        super().__init__(**kwargs)


class PythonCallableOperator(BaseOperator):
    """The `python_callable` with `op_args`, `op_kwargs` and `templates_dict` that
    PythonOperator executes and PythonSensor pokes."""

    template_fields: Sequence[str] = ("templates_dict", "op_args", "op_kwargs")

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Sequence[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        templates_dict: Mapping[str, Any] | None = None,
        templates_exts: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        _check_callable(python_callable, kwargs.get("task_id", "?"))
        if templates_exts is not None:
            self.template_ext = check_templates_exts(templates_exts, kwargs.get("task_id", "?"))
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.templates_dict = dict(templates_dict) if templates_dict is not None else None
        super().__init__(**kwargs)

    def call_callable(self, context: Mapping[str, Any]) -> Any:
        return call_python(
            self.python_callable,
            self.op_args,
            self.op_kwargs,
            context,
            templates_dict=self.templates_dict,
        )


class PythonOperator(PythonCallableOperator):
    """Calls `python_callable(*op_args, **op_kwargs)` plus the context keys it asks for."""

    def execute(self, context: Mapping[str, Any]) -> Any:
        return self.call_callable(context)


class BranchPythonOperator(PythonOperator):
    """The callable returns the task id(s) to follow; other direct downstream tasks skip."""

    def execute(self, context: Mapping[str, Any]) -> Any:
        result = super().execute(context)
        skip = branch_skip_ids(self, result)
        log.info("branch chose %r; skipping %s", result, skip or "nothing")
        context["ti"].skip_downstream(skip)
        return result


class ShortCircuitOperator(PythonOperator):
    """A falsy result skips downstream tasks.

    With `ignore_downstream_trigger_rules` (the default) every task downstream is skipped;
    without it only the direct downstream tasks, and trigger rules decide for the rest.
    """

    def __init__(self, *, ignore_downstream_trigger_rules: bool = True, **kwargs: Any) -> None:
        self.ignore_downstream_trigger_rules = ignore_downstream_trigger_rules
        super().__init__(**kwargs)

    def execute(self, context: Mapping[str, Any]) -> Any:
        condition = super().execute(context)
        if not condition:
            skip = short_circuit_skip_ids(self, self.ignore_downstream_trigger_rules)
            log.info("condition is falsy (%r); skipping %s", condition, skip or "nothing")
            context["ti"].skip_downstream(skip)
        return condition


#: Runs a person started (`dags trigger`, `dags test`): LatestOnlyOperator lets them through,
#: as Airflow does for externally triggered runs. Backfills are checked like scheduled runs.
TRIGGERED_RUN_TYPES = frozenset({"manual", "test"})


def is_latest_interval(timetable: Timetable, data_interval_end: datetime, now: datetime) -> bool:
    """Whether `now` is within the interval after the one ending at `data_interval_end`,
    i.e. whether a run of that interval is the latest one the schedule has made due.

    A schedule with no interval after it (None, @once) makes every run the latest.
    """
    following = timetable.next_dagrun_info(
        coerce_utc(data_interval_end), None, None, catchup=True, now=now
    )
    if following is None:
        return True
    return following.start < coerce_utc(now) <= following.end


class LatestOnlyOperator(BaseOperator):
    """Skips its direct downstream tasks unless the run is of the latest scheduled interval.

    On a scheduled (or backfill) run whose next interval has not started by now, or has
    already ended, every direct downstream task is skipped and trigger rules carry the
    skip further (an `all_done` task still runs). Manual and test runs go through.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._now: Callable[[], datetime] = _utcnow  # a test may drive its own clock
        super().__init__(**kwargs)

    def execute(self, context: Mapping[str, Any]) -> list[str]:
        follow = sorted(self.downstream_task_ids)
        run = context["dag_run"]
        if getattr(run, "run_type", None) in TRIGGERED_RUN_TYPES:
            log.info("%s run: allowing execution to proceed", run.run_type)
            return follow
        dag = context["dag"]
        end = getattr(run, "data_interval_end", None) or context["logical_date"]
        now = self._now()
        if is_latest_interval(dag.timetable, end, now):
            log.info("latest interval (now %s): allowing execution to proceed", now.isoformat())
            return follow
        skip = branch_skip_ids(self, None)
        log.info("not the latest interval (now %s); skipping %s", now.isoformat(), skip)
        context["ti"].skip_downstream(skip)
        return []


def _utcnow() -> datetime:
    return datetime.now(UTC)


class BashOperator(BaseOperator):
    """Runs `bash -c <bash_command>` in its own process group; returns the last output line.

    Each output line goes to the `engine.task` log. Exit code `skip_on_exit_code` (99 by
    default) ends the task as skipped; any other non-zero code fails it. Without `cwd` the
    command runs in a fresh temporary directory, as in Airflow.
    """

    template_fields: Sequence[str] = ("bash_command", "env", "cwd")
    template_ext: Sequence[str] = (".sh", ".bash")
    shallow_copy_attrs: Sequence[str] = ("_process",)
    #: seconds between SIGTERM and SIGKILL when the process group is stopped
    kill_grace_period = 5.0

    def __init__(
        self,
        *,
        bash_command: str,
        env: Mapping[str, str] | None = None,
        append_env: bool = False,
        cwd: str | None = None,
        skip_on_exit_code: int | Iterable[int] | None = 99,
        output_encoding: str = "utf-8",
        **kwargs: Any,
    ) -> None:
        self.bash_command = bash_command
        self.env = dict(env) if env is not None else None
        self.append_env = append_env
        self.cwd = cwd
        if skip_on_exit_code is None:
            self.skip_on_exit_code: tuple[int, ...] = ()
        elif isinstance(skip_on_exit_code, int):
            self.skip_on_exit_code = (skip_on_exit_code,)
        else:
            self.skip_on_exit_code = tuple(skip_on_exit_code)
        self.output_encoding = output_encoding
        self.subprocess_pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        super().__init__(**kwargs)

    def _environment(self, context: Mapping[str, Any]) -> dict[str, str]:
        if self.env is None:
            env = dict(os.environ)
        elif self.append_env:
            env = {**os.environ, **self.env}
        else:
            env = dict(self.env)
        env.update(_context_env(context))
        for key, value in env.items():
            if not isinstance(value, str):
                raise TaskError(
                    f"task {self.task_id!r}: env[{key!r}] must be a string, not {value!r}"
                )
        return env

    def execute(self, context: Mapping[str, Any]) -> str:
        if not isinstance(self.bash_command, str) or not self.bash_command.strip():
            raise TaskError(f"task {self.task_id!r}: bash_command is empty")
        if self.cwd is not None and not os.path.isdir(self.cwd):
            raise TaskError(f"task {self.task_id!r}: cwd {self.cwd!r} is not a directory")
        env = self._environment(context)
        with tempfile.TemporaryDirectory(prefix="dagwatch-bash-") as scratch:
            code, last_line = self._run(env, self.cwd or scratch)
        if code in self.skip_on_exit_code:
            raise SkipTask(f"Bash command returned exit code {code}. Skipping.")
        if code != 0:
            raise TaskError(
                f"Bash command failed. The command returned a non-zero exit code {code}."
            )
        return last_line

    def _run(self, env: dict[str, str], cwd: str) -> tuple[int, str]:
        process = subprocess.Popen(
            ["bash", "-c", self.bash_command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self._process = process
        self.subprocess_pid = process.pid
        log.info("running command in process group %s: %s", process.pid, self.bash_command)
        last_line = ""
        try:
            assert process.stdout is not None
            for raw in iter(process.stdout.readline, b""):
                last_line = raw.decode(self.output_encoding, errors="backslashreplace").rstrip()
                log.info("%s", last_line)
            code = process.wait()
        except BaseException:
            # interrupted (timeout signal, KeyboardInterrupt...): leave nothing running
            self._kill_process_group(process)
            raise
        finally:
            if process.stdout is not None:
                process.stdout.close()
        log.info("command exited with code %s", code)
        return code, last_line

    def _kill_process_group(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM the group, SIGKILL it after the grace period, reap the leader."""
        if process.returncode is not None:
            return  # reaped: its group id may already belong to someone else
        pgid = process.pid  # start_new_session=True: the leader's pid is the group id
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + self.kill_grace_period
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if process.poll() is not None and sig is signal.SIGTERM:
                # the leader is gone; stop any member that ignored SIGTERM
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                break
        if process.poll() is None:
            process.wait()

    def on_kill(self) -> None:
        if self._process is not None:
            self._kill_process_group(self._process)


def _context_env(context: Mapping[str, Any]) -> dict[str, str]:
    """DAGWATCH_CTX_* variables identifying the attempt, from what the context holds."""
    values = {
        "DAGWATCH_CTX_DAG_ID": getattr(context.get("dag"), "dag_id", None),
        "DAGWATCH_CTX_TASK_ID": getattr(context.get("task"), "task_id", None),
        "DAGWATCH_CTX_RUN_ID": context.get("run_id"),
        "DAGWATCH_CTX_TRY_NUMBER": context.get("try_number"),
        "DAGWATCH_CTX_LOGICAL_DATE": context.get("ts"),
    }
    return {key: str(value) for key, value in values.items() if value is not None}
