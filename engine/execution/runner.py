"""One attempt of one task instance: start → render → execute → persist → callbacks.

The runner is the only part besides the DAG processor that runs user code. It moves the
task instance queued → running → outcome through the metastore's write path, writes the
attempt's log to `<base_log_folder>/<dag_id>/<run_id>/<task_id>/attempt=<n>.log`
(mapped instances: `.../<task_id>/map_index=<i>/attempt=<n>.log`) with secrets masked,
enforces `execution_timeout`, and records each callback's outcome; a
raising callback never changes the task's state.

A sensor in reschedule mode ends most attempts with RescheduleTask (up_for_reschedule).
Those are pokes, not tries: the next attempt continues the same try (same try_number,
task_try row and log file, appended to; start_date stays the first poke's), so
reschedules never use retries. `execution_timeout` limits each poke.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import secrets
from engine.exceptions import (
    FailTaskNoRetry,
    RescheduleTask,
    SkipTask,
    TaskError,
    TaskTimeout,
    TransitionConflict,
)
from engine.execution.task_api import MetastoreTaskAPI
from engine.observability import emit
from engine.sdk.compat import (
    PREV_SUCCESS,
    TaskContext,
    airflow2_dates,
    file_mentions,
    prev_success,
)
from engine.sdk.context import set_current_context
from engine.sdk.retry import retry_delay
from engine.sdk.schedules import coerce_utc
from engine.sdk.task_instance import RuntimeTaskInstance
from engine.sdk.template_accessors import ConnectionAccessor, VariableAccessor
from engine.sdk.templating import date_context, make_jinja_env
from engine.states import TaskState
from engine.store import runs, transitions
from engine.store import workers as store_workers

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from engine.config import Config
    from engine.store.db import Store

log = logging.getLogger(__name__)
task_log = logging.getLogger("engine.task")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AttemptResult:
    """How an attempt ended, for the caller that schedules what comes next."""

    ti_id: int
    task_id: str
    try_number: int
    state: TaskState
    duration: float
    error: str | None
    skip_task_ids: frozenset[str]
    #: when the next attempt may start: the retry delay or, rescheduled, the next poke
    next_retry_at: datetime | None
    log_path: Path
    map_index: int = -1
    #: someone else moved the task instance meanwhile (an operator marked it): this
    #: outcome only closed the attempt's try, and no callback runs for it
    moved: bool = False


def log_path_for(
    base: Path, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
) -> Path:
    """Airflow's layout; a mapped instance's attempts sit in `map_index=<i>/` below its task."""
    safe_run = run_id.replace("/", "_").replace(":", "_")
    folder = Path(base, dag_id, safe_run, task_id)
    if map_index >= 0:
        folder = folder / f"map_index={map_index}"
    return folder / f"attempt={try_number}.log"


@contextlib.contextmanager
def attempt_logging(path: Path) -> Iterator[None]:
    """Send the attempt's logs, prints and stderr to its log file, with secrets masked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("a", encoding="utf-8", buffering=1)
    handler = logging.StreamHandler(secrets.redact_stream(stream))
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(secrets.RedactingFilter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(min(old_level or logging.INFO, logging.INFO))
    redacted = secrets.redact_stream(stream)
    try:
        with contextlib.redirect_stdout(redacted), contextlib.redirect_stderr(redacted):
            yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
        stream.close()


@contextlib.contextmanager
def execution_timeout(seconds: float | None, task_id: str) -> Iterator[None]:
    """Raise TaskTimeout in this (main) thread after `seconds`."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expired(signum: int, frame: Any) -> None:
        raise TaskTimeout(f"task {task_id!r} timed out after {seconds:g} s (execution_timeout)")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def build_context(dag: Any, task: Any, run: Any, ti: RuntimeTaskInstance, config: Config) -> dict:
    """The template and callback context of one attempt (Airflow's names)."""
    context = TaskContext(
        date_context(run.logical_date, run.data_interval_start, run.data_interval_end)
    )
    # The Airflow 2 variables are computed when read (TaskContext, the Jinja context, a
    # callable's arguments), or here for a DAG file that names them (a `**context` callable
    # gets a plain copy of the context)
    named = file_mentions(getattr(dag, "fileloc", None))
    if named:
        query = partial(prev_success, ti.api, run) if PREV_SUCCESS in named else None
        context.update(airflow2_dates(dag.timetable, run, query))
    context.update(
        dag=dag,
        task=task,
        ti=ti,
        task_instance=ti,
        run_id=run.run_id,
        dag_run=run,
        params=task.params.resolve(run.conf),
        var=VariableAccessor(),
        conn=ConnectionAccessor(),
        conf=config,
        try_number=ti.try_number,
    )
    return context


class StaleMessage(TransitionConflict):
    """A message for an attempt that is no longer queued under that message's id (a copy
    the broker redelivered, or one replaced by a re-send): it must not start anything."""


def _begin(
    store: Store,
    ti_id: int,
    *,
    base_log: Path,
    now: datetime,
    hostname: str,
    pid: int | None,
    external_id: str | None = None,
):
    """queued → running, try_number + 1, a task_try row; return (ti row, run row, log path,
    the open try it continues or None). The next poke of a rescheduled sensor continues
    its open try instead: same try_number and row, start_date kept at the first poke.
    The row comes with its run in one query; the transition updates it in place (no refresh)."""
    with store.session() as session:
        if external_id is not None:  # the row stays locked (PostgreSQL) until the start commits
            state, current = store_workers.current_external_id(session, ti_id, lock=True)
            if current != external_id or state != TaskState.QUEUED.value:
                raise StaleMessage(
                    f"task instance {ti_id} is {state or 'gone'} with message {current}, "
                    f"not queued with message {external_id}"
                )
        ti, run = runs.get_task_instance_and_run(session, ti_id)
        resumed = None
        if ti.try_number:  # a sensor's next poke continues its try
            resumed = runs.open_rescheduled_try(session, ti_id, ti.try_number)
        try_number = ti.try_number if resumed else ti.try_number + 1
        path = log_path_for(base_log, ti.dag_id, ti.run_id, ti.task_id, try_number, ti.map_index)
        transitions.transition_task_instance(
            session,
            ti_id,
            expected=TaskState.QUEUED,
            to=TaskState.RUNNING,
            at=now,
            try_number=try_number,
            start_date=resumed.start_date if resumed else now,
            end_date=None,
            duration=None,
            hostname=hostname,
            pid=pid,
            last_heartbeat=now,
            next_retry_at=None,
        )
        if resumed:
            runs.resume_try(session, ti_id, try_number, hostname=hostname, pid=pid)
        else:
            runs.start_try(session, ti, hostname=hostname, pid=pid, log_path=str(path), now=now)
        session.expunge_all()
    emit.attempt_started(ti, now)
    return ti, run, path, resumed


def heartbeat_interval(config: Config) -> float:
    """Seconds between heartbeats: several per `scheduler.heartbeat_timeout`, at most 5."""
    return min(5.0, float(config["scheduler.heartbeat_timeout"]) / 6)


@contextlib.contextmanager
def heartbeating(
    store: Store,
    ti_id: int,
    interval: float,
    clock: Clock,
    on_moved: Callable[[str], object] | None = None,
) -> Iterator[None]:
    """Refresh `last_heartbeat` from a daemon thread while the block runs, so the scheduler
    can tell a live attempt from one whose process vanished (a zombie). When the task
    instance is found no longer running (an operator marked it, say), the beats stop and
    `on_moved(reason)` is called: the executor's way to stop the attempt."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                with store.session() as session:
                    if not runs.heartbeat(session, ti_id, clock()):
                        state = runs.task_instance_state(session, ti_id)
                        break
            except Exception as exc:  # a missed beat is not worth failing the task for
                log.warning("heartbeat of task instance %s failed: %s", ti_id, exc)
        else:
            return
        if on_moved is not None and not stop.is_set():
            on_moved(f"the task instance was set to {state or 'nothing (deleted)'} meanwhile")

    thread = threading.Thread(target=beat, name=f"dagwatch-heartbeat-{ti_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval)


#: the longest rendered field kept, in characters
RENDERED_FIELD_LIMIT = 10_000


def _keep_rendered(task: Any, context: dict) -> None:
    """Note the rendered template fields, masked, on the attempt's `ti`; they are written
    with the attempt's outcome (one transaction, not one of their own). Called once the
    task's code has returned or raised."""
    names = tuple(getattr(task, "template_fields", ()) or ())
    ti = context.get("ti")
    if not names or not isinstance(ti, RuntimeTaskInstance):
        return
    ti.rendered_fields = {
        name: secrets.redact(str(getattr(task, name, None)))[:RENDERED_FIELD_LIMIT]
        for name in names
    }


def _execute(task: Any, context: dict, dag: Any) -> Any:
    rendered = False
    try:
        with set_current_context(context):
            task.render_template_fields(context, make_jinja_env(dag))
            rendered = True
            with execution_timeout(_seconds(task.execution_timeout), task.task_id):
                try:
                    return task.execute(context)
                except TaskTimeout:
                    task.on_kill()
                    raise
    finally:
        # after the task's code, where a stop (SIGTERM) cannot interrupt it
        if rendered:
            _keep_rendered(task, context)


def _push_result(ti: RuntimeTaskInstance, task: Any, value: Any) -> None:
    if value is None or not getattr(task, "do_xcom_push", True):
        return
    if getattr(task, "multiple_outputs", False):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise TaskError(
                f"task {task.task_id!r} has multiple_outputs=True but returned "
                f"{type(value).__name__}, not a dict with string keys"
            )
        for key, item in value.items():
            ti.xcom_push(key, item)
    ti.xcom_push("return_value", value)


def _failure_state(exc: BaseException, ti: Any) -> TaskState:
    if isinstance(exc, FailTaskNoRetry) or ti.try_number > ti.max_tries:
        return TaskState.FAILED
    return TaskState.UP_FOR_RETRY


@dataclass(frozen=True)
class Begun:
    """An attempt recorded as running: what the rest of it needs (picklable rows)."""

    row: Any  #: the task instance, as queued → running left it (its new try_number)
    run: Any  #: its DAG run
    path: Path  #: the attempt's log file
    resumed: runs.OpenTry | None  #: the open try a sensor's next poke continues
    started: float  #: time.monotonic() when the attempt began, less a resumed try's age


@dataclass(frozen=True)
class Executed:
    """How the task itself ended, before it is recorded.

    Built in the process that ran the task, the only one that knows the secrets the task
    read: its error is masked here, before it travels to the worker that records it.
    """

    state: TaskState
    error: str | None = None
    timed_out: bool = False
    reschedule_at: datetime | None = None
    skip_task_ids: frozenset[str] = frozenset()
    #: the task's template fields as rendered (masked), written with the outcome
    rendered_fields: dict[str, str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.error:
            object.__setattr__(self, "error", secrets.redact(self.error))


def begin_attempt(
    store: Store,
    config: Config,
    ti_id: int,
    *,
    clock: Clock = utcnow,
    hostname: str | None = None,
    pid: int | None = None,
    external_id: str | None = None,
) -> Begun:
    """Record the queued task instance `ti_id` as running (see `_begin`); with
    `external_id`, only if it is still queued under that message (else StaleMessage)."""
    started = time.monotonic()
    now = clock()
    row, run, path, resumed = _begin(
        store,
        ti_id,
        base_log=Path(config["logging.base_log_folder"]),
        now=now,
        hostname=hostname or socket.getfqdn(),
        pid=pid,
        external_id=external_id,
    )
    # a continued try's duration runs from its first poke, as poke mode's would
    return Begun(row, run, path, resumed, started - (now - row.start_date).total_seconds())


def execute_attempt(
    store: Store,
    config: Config,
    dag: Any,
    begun: Begun,
    *,
    clock: Clock = utcnow,
    on_moved: Callable[[str], object] | None = None,
) -> tuple[Executed, Any, RuntimeTaskInstance, dict]:
    """Run the task of a begun attempt, with heartbeats, in this process; call it inside
    `attempt_logging(begun.path)`. Returns how it ended, the task (unmapped if it was
    mapped), its runtime instance and the callbacks' context. `on_moved(reason)` is called
    from the heartbeat thread if the task instance stops being running meanwhile."""
    row, run = begun.row, begun.run
    task = dag.get_task(row.task_id).prepare_for_execution()
    ti = RuntimeTaskInstance(
        MetastoreTaskAPI(store, config), row.dag_id, row.run_id, row.task_id, row.try_number,
        row.max_tries,
        row.hostname, begun.path, row.map_index, task, start_date=row.start_date,
        reschedule_count=begun.resumed.reschedules if begun.resumed else 0,
    )  # fmt: skip
    executed, context = Executed(TaskState.SUCCESS), {}
    _log_start(ti, begun.resumed)
    with heartbeating(store, row.id, heartbeat_interval(config), clock, on_moved):
        try:
            if getattr(task, "unmap", None) is not None:  # a mapped task: this index's
                task = ti.task = task.unmap({"ti": ti}).prepare_for_execution()
            context = build_context(dag, task, run, ti, config)
            run_callbacks(store, task.on_execute_callback, context, "on_execute_callback", ti)
            _push_result(ti, task, _execute(task, context, dag))
        except SkipTask as exc:
            executed = Executed(TaskState.SKIPPED, str(exc) or None)
            task_log.info("task skipped: %s", executed.error or "SkipTask raised")
        except RescheduleTask as exc:
            executed = Executed(
                TaskState.UP_FOR_RESCHEDULE, reschedule_at=coerce_utc(exc.reschedule_date)
            )
        except (Exception, SystemExit) as exc:  # the attempt fails, the runner goes on
            executed = Executed(
                _failure_state(exc, row), _describe(exc), timed_out=isinstance(exc, TaskTimeout)
            )
            task_log.error("task failed:\n%s", "".join(traceback.format_exception(exc)))
    if executed.state is TaskState.SUCCESS and ti.skipped_task_ids:
        executed = Executed(TaskState.SUCCESS, skip_task_ids=frozenset(ti.skipped_task_ids))
    if ti.rendered_fields is not None:
        executed = replace(executed, rendered_fields=ti.rendered_fields)
    return executed, task, ti, context


def finish_attempt(
    store: Store,
    dag: Any,
    begun: Begun,
    executed: Executed,
    *,
    clock: Clock = utcnow,
    task: Any = None,
) -> AttemptResult:
    """Record how a begun attempt ended (see `_finish`), and count it."""
    row = begun.row
    task = task if task is not None else dag.get_task(row.task_id)
    result = _finish(store, row, begun.run, task, executed, begun.started, clock, begun.path)
    emit.attempt_finished(
        row.dag_id, row.task_id, row.operator, executed.state, result.duration,
        timed_out=executed.timed_out,
    )  # fmt: skip
    return result


def run_attempt(
    store: Store,
    config: Config,
    dag: Any,
    ti_id: int,
    *,
    clock: Clock = utcnow,
    hostname: str | None = None,
    pid: int | None = None,
    end_processes: Callable[[], object] | None = None,
    external_id: str | None = None,
    on_moved: Callable[[str], object] | None = None,
) -> AttemptResult:
    """Run the queued task instance `ti_id` once, in this process, and record the outcome;
    `end_processes` ends what the task left running before the outcome is recorded;
    `on_moved` stops the task if its task instance is moved meanwhile (`execute_attempt`)."""
    begun = begin_attempt(
        store, config, ti_id, clock=clock, hostname=hostname, pid=pid or os.getpid(),
        external_id=external_id,
    )  # fmt: skip
    with attempt_logging(begun.path):
        executed, task, ti, context = execute_attempt(
            store, config, dag, begun, clock=clock, on_moved=on_moved
        )
        if end_processes is not None:  # no retry may start beside what this try started
            end_processes()
        result = finish_attempt(store, dag, begun, executed, clock=clock, task=task)
        context["exception"] = executed.error
        _after_callbacks(store, task, result, context, ti)
    return result


def _log_start(ti: RuntimeTaskInstance, resumed: runs.OpenTry | None) -> None:
    if resumed is None:
        task_log.info("starting attempt %s of %s.%s", ti.try_number, ti.dag_id, ti.task_id)
        return
    task_log.info(
        "poking again: attempt %s of %s.%s, rescheduled %d time(s) since %s",
        ti.try_number, ti.dag_id, ti.task_id, resumed.reschedules,
        resumed.start_date.isoformat(),
    )  # fmt: skip


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TaskError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


#: how the try of an attempt whose task instance was moved meanwhile is recorded
_TRY_ENDS = {
    TaskState.UP_FOR_RETRY: TaskState.FAILED,
    TaskState.UP_FOR_RESCHEDULE: TaskState.FAILED,
}


def _finish(
    store: Store,
    row: Any,
    run: Any,
    task: Any,
    executed: Executed,
    started: float,
    clock: Clock,
    path: Path,
) -> AttemptResult:
    state, error, reschedule_at = executed.state, executed.error, executed.reschedule_at
    now = clock()
    duration = time.monotonic() - started
    next_retry_at = reschedule_at
    if state is TaskState.UP_FOR_RETRY:
        next_retry_at = now + retry_delay(
            base=task.retry_delay,
            try_number=row.try_number,
            exponential=task.retry_exponential_backoff,
            max_delay=task.max_retry_delay,
            seed=f"{row.dag_id}#{row.task_id}#{run.logical_date.isoformat()}",
        )
    with store.session() as session:
        moved = not transitions.transition_task_instances(
            session,
            [row.id],
            expected=TaskState.RUNNING,
            to=state,
            at=now,
            reason=f"next poke at {reschedule_at.isoformat()}" if reschedule_at else error,
            values={"end_date": now, "duration": duration, "next_retry_at": next_retry_at},
        )
        if state is TaskState.UP_FOR_RESCHEDULE and not moved:
            runs.reschedule_try(session, row.id, row.try_number)
        else:  # moved: no retry nor next poke follows from this attempt, its try failed
            runs.finish_try(
                session,
                row.id,
                row.try_number,
                state=_TRY_ENDS.get(state, state) if moved else state,
                end_date=now,
                duration=duration,
                error=error,
                only_open=moved,
            )
        if executed.rendered_fields is not None:
            runs.set_rendered_fields(
                session, dag_id=row.dag_id, run_id=row.run_id, task_id=row.task_id,
                map_index=row.map_index, try_number=row.try_number,
                fields=executed.rendered_fields,
            )  # fmt: skip
        skips = executed.skip_task_ids if state is TaskState.SUCCESS and not moved else frozenset()
        if skips:  # branching: in the same transaction as the branch task's success
            _skip_downstream(session, row, skips, now)
    if moved:
        task_log.warning(
            "attempt %s ended %s, after its task instance was moved by someone else: "
            "not recorded as the task instance's state", row.try_number, state,
        )  # fmt: skip
    elif reschedule_at is not None:
        task_log.info(
            "attempt %s rescheduled: next poke at %s", row.try_number, reschedule_at.isoformat()
        )
    else:
        level = logging.INFO if state is TaskState.SUCCESS else logging.WARNING
        task_log.log(level, "attempt %s ended: %s (%.3f s)", row.try_number, state, duration)
    return AttemptResult(
        row.id, row.task_id, row.try_number, state, duration, error, skips, next_retry_at, path,
        row.map_index, moved,
    )  # fmt: skip


def _skip_downstream(session: Session, row: Any, task_ids: frozenset[str], now: datetime) -> None:
    """Skip the tasks a branch or short-circuit did not follow (those not yet started)."""
    waiting = [
        ti
        for ti in runs.get_task_instances(session, row.dag_id, row.run_id)
        if ti.task_id in task_ids and ti.state in (TaskState.NONE, TaskState.SCHEDULED)
    ]
    for state in (TaskState.NONE, TaskState.SCHEDULED):
        ids = [ti.id for ti in waiting if ti.state == state]
        if ids:
            transitions.transition_task_instances(
                session, ids, expected=state, to=TaskState.SKIPPED, at=now,
                reason=f"skipped by {row.task_id}",
            )  # fmt: skip


_AFTER_CALLBACKS = {
    TaskState.SUCCESS: "on_success_callback",
    TaskState.FAILED: "on_failure_callback",
    TaskState.UP_FOR_RETRY: "on_retry_callback",
    TaskState.SKIPPED: "on_skipped_callback",
}


def _after_callbacks(
    store: Store, task: Any, result: AttemptResult, context: dict, ti: RuntimeTaskInstance
) -> None:
    kind = _AFTER_CALLBACKS.get(result.state)
    if kind and context and not result.moved:
        run_callbacks(store, getattr(task, kind, None), context, kind, ti)


def callback_name(callback: Any) -> str:
    name = getattr(callback, "__qualname__", None) or type(callback).__qualname__
    module = getattr(callback, "__module__", "") or ""
    if module.startswith("dagwatch_dagfile_"):
        module = module.split("_", 3)[-1]
    return f"{module}.{name}" if module else name


def run_callbacks(
    store: Store,
    callbacks: Callable[[dict], Any]
    | list[Callable[[dict], Any]]
    | tuple[Callable[[dict], Any], ...]
    | None,
    context: dict,
    kind: str,
    ti: RuntimeTaskInstance | None,
    *,
    dag_id: str | None = None,
    run_id: str | None = None,
) -> list[str | None]:
    """Call each callback with the context; record and log each outcome; never raise."""
    if callbacks is None:
        return []
    outcomes = []
    for callback in callbacks if isinstance(callbacks, list | tuple) else [callbacks]:
        started = time.monotonic()
        error = None
        try:
            callback(context)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("callback %s failed: %s", callback_name(callback), error, exc_info=exc)
        with store.session() as session:
            runs.record_callback(
                session,
                at=utcnow(),
                dag_id=ti.dag_id if ti else dag_id,  # type: ignore[arg-type]
                run_id=ti.run_id if ti else run_id,  # type: ignore[arg-type]
                task_id=ti.task_id if ti else None,
                try_number=ti.try_number if ti else None,
                kind=kind,
                callback=callback_name(callback),
                status="failed" if error else "success",
                duration=time.monotonic() - started,
                error=secrets.redact(error) if error else None,
            )
        emit.callback_ran(
            ti.dag_id if ti else dag_id,  # type: ignore[arg-type]  # given when ti is None
            kind,
            error is not None,
            dag_level=ti is None,
        )
        outcomes.append(error)
    return outcomes


def print_log(path: Path, out: Any = None) -> None:
    """Copy an attempt's log to `out` (stdout by default)."""
    out = out or sys.stdout
    if path.exists():
        out.write(path.read_text(encoding="utf-8"))
