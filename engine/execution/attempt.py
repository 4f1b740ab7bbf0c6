"""Inside a worker: find the task in its DAG file, run the attempt or callbacks, report.

`run_here` is the one way an attempt runs in the process that calls it: a local-executor
worker (`engine.execution.local.worker`) or the attempt process it forked, a Celery pool
process, the sequential executor. Callback processes start at `callback_main`. An
attempt whose DAG file or task cannot be loaded never starts: its task instance goes
queued → failed with the reason, so the scheduler does not wait on it forever.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from engine import runtime
from engine.config import OPTIONS, Config, Setting
from engine.exceptions import DagwatchError, TaskError
from engine.execution import runner
from engine.execution.base import AttemptRequest, CallbackRequest
from engine.execution.messages import Relayed
from engine.execution.task_api import MetastoreTaskAPI
from engine.observability.child_metrics import install_relay
from engine.parsing.parser import dag_folders, import_dag_file
from engine.sdk.context import get_current_context
from engine.sdk.task_instance import RuntimeTaskInstance
from engine.states import TaskState
from engine.store import callbacks as callback_store
from engine.store import runs, scheduling, transitions
from engine.store.db import Store

log = logging.getLogger(__name__)

#: (home, {option name: (value, source)}): a Config that crosses a process boundary.
ConfigPayload = tuple[str, dict[str, tuple[Any, str]]]
#: (fileloc, mtime_ns, size): one version of a DAG file
DagFileKey = tuple[str, int, int]
_OPTIONS = {option.name: option for option in OPTIONS}


class UnrunnableAttempt(DagwatchError):
    """The DAG file or the task cannot be loaded, so the attempt cannot start."""


class AttemptStopped(TaskError):
    """The executor stopped the attempt (SIGTERM)."""


def config_payload(config: Config) -> ConfigPayload:
    """The effective settings as plain values: a Config holds callables that do not pickle."""
    return str(config.home), {name: (s.value, s.source) for name, s in config.settings.items()}


def config_from_payload(payload: ConfigPayload) -> Config:
    home, values = payload
    settings = {
        name: Setting(_OPTIONS[name], value, source) for name, (value, source) in values.items()
    }
    return Config(Path(home), settings)


class DagCache(OrderedDict[DagFileKey, dict[str, Any]]):
    """Imported DAG files by version ({dag_id: DAG}), least recently used first.

    A long-lived process imports each version of a file once instead of once per attempt;
    `max_files` bounds the memory that costs (a file of thousands of tasks is big).
    """

    def __init__(self, max_files: int | None = None) -> None:
        super().__init__()
        self.max_files = max_files
        self.imports = 0  #: how many imports filled it (a changed count means new objects)

    def load(self, request: AttemptRequest) -> Any:
        """The DAG of `request`, imported once per version of its file."""
        return load_dag(request.fileloc, request.dag_id, request.task_id, self)

    def trim(self) -> None:
        """Drop the least recently used files beyond `max_files`, with their modules."""
        while self.max_files is not None and len(self) > self.max_files:
            (fileloc, _mtime, _size), _dags = self.popitem(last=False)
            for name, module in list(sys.modules.items()):
                if getattr(module, "__file__", None) == fileloc:
                    del sys.modules[name]


@functools.cache
def hostname() -> str:
    """This host's name, looked up once: the fork server's warm-up fills the cache for every
    child, so a slow resolver does not delay each attempt."""
    return socket.getfqdn()


def extend_sys_path(config: Config) -> None:
    """DAG files may import modules next to them, as they could while being parsed."""
    for folder in dag_folders(config):
        if folder.is_dir() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


def load_dag(
    fileloc: str, dag_id: str, task_id: str | None, cache: MutableMapping[Any, Any] | None
) -> Any:
    """Import `fileloc` (or reuse the cached import of this version) and return `dag_id`."""
    path = Path(fileloc)
    try:
        stat = path.stat()
    except OSError as exc:
        raise UnrunnableAttempt(f"DAG file {fileloc} cannot be read: {exc.strerror}") from None
    key = (fileloc, stat.st_mtime_ns, stat.st_size)
    dags = cache.get(key) if cache is not None else None
    if dags is not None and isinstance(cache, OrderedDict):
        cache.move_to_end(key)
    if dags is None:
        dags = _import(fileloc)
        if cache is not None:
            for old in [k for k in cache if k[0] == fileloc]:
                del cache[old]
            cache[key] = dags
        if isinstance(cache, DagCache):
            cache.imports += 1
            cache.trim()
    dag = dags.get(dag_id)
    if dag is None:
        defined = ", ".join(sorted(dags)) or "none"
        raise UnrunnableAttempt(f"DAG {dag_id!r} is not defined in {fileloc} (defined: {defined})")
    if task_id is not None and not dag.has_task(task_id):
        raise UnrunnableAttempt(f"task {task_id!r} is not in DAG {dag_id!r} ({fileloc})")
    return dag


def _import(fileloc: str) -> dict[str, Any]:
    try:
        return {dag.dag_id: dag for dag in import_dag_file(Path(fileloc))}
    except (Exception, SystemExit) as exc:
        log.exception("importing %s failed", fileloc)
        raise UnrunnableAttempt(
            f"importing DAG file {fileloc} failed: {type(exc).__name__}: {exc}"
        ) from None


def fail_unstarted(store: Store, ti_id: int, reason: str) -> TaskState | None:
    """queued → failed for an attempt that never started; None if it is no longer queued."""
    now = datetime.now(UTC)
    with store.session() as session:
        changed = transitions.transition_task_instances(
            session,
            [ti_id],
            expected=TaskState.QUEUED,
            to=TaskState.FAILED,
            at=now,
            reason=reason,
            values={"end_date": now},
        )
        # the next poke of a rescheduled sensor: the try it continued ends here
        scheduling.close_open_tries(session, changed, now=now, error=reason, state=TaskState.FAILED)
    return TaskState.FAILED if changed else None


def refuse(
    store: Store, request: AttemptRequest, exc: UnrunnableAttempt
) -> tuple[TaskState | None, str]:
    """Fail an attempt that cannot start: (the state recorded, the reason)."""
    reason = f"the attempt could not start: {exc}"
    log.error("task instance %s: %s", request.ti_id, reason)
    state = fail_unstarted(store, request.ti_id, reason)
    return state, reason if state else f"{reason}; the task instance was no longer queued"


@dataclass(frozen=True)
class Ran:
    """How an attempt run by `run_here` ended."""

    #: the state recorded; None when none was (it failed outside the task, or the task
    #: instance was no longer queued when a refused attempt was to fail)
    state: TaskState | None
    error: str | None = None
    #: it failed outside the task's code: what it recorded, and what it left, is unknown
    broken: bool = False


def run_here(
    store: Store,
    config: Config,
    request: AttemptRequest,
    load: Callable[[AttemptRequest], Any],
    *,
    ready: Callable[[], object] | None = None,
    pid: int | None = None,
    external_id: str | None = None,
    end_processes: Callable[[], object] | None = None,
    on_moved: Callable[[str], object] | None = None,
    contain: type[BaseException] | tuple[type[BaseException], ...] = Exception,
) -> Ran:
    """Run one attempt in this process and record it, as every executor does.

    `load` gives the DAG (an attempt whose DAG or task cannot be loaded is refused:
    queued → failed); `ready` is called once it is loaded, just before the attempt begins
    (a worker notes there what the attempt may change in its process). `end_processes`
    and `on_moved` are `runner.run_attempt`'s. An exception of the `contain` classes
    raised outside the task's code is reported as a broken attempt instead of raised: a
    process that exists only to run attempts contains them all (`BaseException`); the
    scheduler's own process (the sequential executor) lets an interrupt through.
    """
    try:
        try:
            dag = load(request)
        except UnrunnableAttempt as exc:
            state, error = refuse(store, request, exc)
            return Ran(state, error)
        if ready is not None:
            ready()
        result = runner.run_attempt(
            store, config, dag, request.ti_id, hostname=hostname(), pid=pid,
            external_id=external_id, end_processes=end_processes, on_moved=on_moved,
        )  # fmt: skip
    except runner.StaleMessage:
        raise
    except contain as exc:
        log.exception("attempt of task instance %s failed outside the task", request.ti_id)
        error = f"the attempt failed outside the task: {type(exc).__name__}: {exc}"
        return Ran(None, error, broken=True)
    return Ran(result.state, result.error)


class StopHandler:
    """SIGTERM raises AttemptStopped inside the task, so the runner records the failure.

    Outside the task's code (starting up, recording the outcome) raising would break the
    bookkeeping instead, so the signal is re-sent until the task's code is running.
    """

    def __init__(self, reasons: Any) -> None:
        #: where the executor's reason arrives (`poll()`, `recv()`): a pipe from the worker
        #: to its attempt process, or the connection of a worker running the attempt itself
        self.reasons = reasons
        self.reason: str | None = None
        self.raised = False
        self.retrying = False
        self.cancelled = False

    @property
    def requested(self) -> bool:
        """Whether a stop arrived (raised inside the task or not)."""
        return self.reason is not None

    def cancel(self) -> None:
        """The attempt is over: stop re-sending the signal (a worker that ran the attempt
        itself goes on living)."""
        self.cancelled = True

    def stop_self(self, reason: str) -> None:
        """Stop the attempt this process runs, for `reason`, as a stop from the executor
        would (called from another thread: the heartbeat's, when the task instance was
        moved by someone else)."""
        if self.cancelled:
            return
        if self.reason is None:
            self.reason = reason
        os.kill(os.getpid(), signal.SIGTERM)

    def __call__(self, signum: int, frame: Any) -> None:
        if self.cancelled:  # a late signal: the next messages are not for this attempt
            return
        if self.reason is None:
            self.reason = "stopped by the executor"
            try:
                if self.reasons.poll():
                    self.reason = str(self.reasons.recv())
            except (OSError, EOFError):
                pass
        if self.raised:
            return
        try:
            get_current_context()
        except DagwatchError:  # not inside the task's code
            self._retry_later()
            return
        self.raised = True
        raise AttemptStopped(f"stopped: {self.reason} (received SIGTERM)")

    def _retry_later(self) -> None:
        if self.retrying:
            return
        self.retrying = True

        def again() -> None:
            while not (self.raised or self.cancelled):
                time.sleep(0.05)
                if not self.cancelled:
                    os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=again, name="dagwatch-stop-retry", daemon=True).start()


def _child_store(payload: ConfigPayload) -> tuple[Config, Store]:
    """Own process group, own metastore connections (never the parent's), runtime handles."""
    os.setpgrp()
    config = config_from_payload(payload)
    store = Store.from_config(config)
    runtime.configure(config, store)
    extend_sys_path(config)
    return config, store


def run_callback_request(
    store: Store, config: Config, request: CallbackRequest, cache: DagCache | None
) -> None:
    """Run DAG callbacks (or a task's, for a zombie); each outcome goes to the callback table.

    The request is marked done once they ran (whatever their outcome): a process dying
    before leaves it to a scheduler to run again.
    """
    _run_callback_request(store, config, request, cache)
    if request.request_id is not None:
        with store.session() as session:
            callback_store.finish(session, request.request_id, datetime.now(UTC))


def _run_callback_request(
    store: Store, config: Config, request: CallbackRequest, cache: DagCache | None
) -> None:
    try:
        dag = load_dag(request.fileloc, request.dag_id, request.task_id, cache)
    except UnrunnableAttempt as exc:
        _record_unrunnable(store, request, str(exc))
        return
    with store.session() as session:
        run = runs.get_dag_run(session, request.dag_id, request.run_id)
        session.expunge(run)
    if request.task_id is None:
        context = {
            "dag": dag,
            "dag_run": run,
            "run_id": run.run_id,
            "reason": request.reason or str(run.state),
            "logical_date": run.logical_date,
        }
        if request.kind == "sla_miss_callback":
            context["sla_misses"] = _sla_misses(store, run.dag_id, run.run_id)
        callbacks = getattr(dag, request.kind, None)
        runner.run_callbacks(
            store, callbacks, context, request.kind, None, dag_id=dag.dag_id, run_id=run.run_id
        )
        return
    _run_task_callbacks(store, config, dag, run, request)


def _sla_misses(store: Store, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The run's recorded SLA misses and missed deadline, for its sla_miss_callback."""
    with store.session(readonly=True) as session:
        rows = runs.sla_misses_of_run(session, dag_id, run_id)
        return [
            {
                "kind": row.kind,
                "task_id": row.task_id or None,
                "deadline": row.deadline,
                "detected_at": row.detected_at,
                "state": row.state,
            }
            for row in rows
        ]


def _run_task_callbacks(
    store: Store, config: Config, dag: Any, run: Any, request: CallbackRequest
) -> None:
    task = dag.get_task(request.task_id).prepare_for_execution()
    with store.session() as session:
        rows = runs.get_task_instances(session, request.dag_id, request.run_id)
        row = next(
            r for r in rows if r.task_id == request.task_id and r.map_index == request.map_index
        )
        session.expunge_all()
    path = runner.log_path_for(
        Path(config["logging.base_log_folder"]),
        row.dag_id,
        row.run_id,
        row.task_id,
        row.try_number,
        row.map_index,
    )
    ti = RuntimeTaskInstance(
        MetastoreTaskAPI(store, config), row.dag_id, row.run_id, row.task_id, row.try_number,
        row.max_tries,
        row.hostname or "", path, row.map_index, task,
    )  # fmt: skip
    with runner.attempt_logging(path):
        context = runner.build_context(dag, task, run, ti, config)
        context.update(exception=request.reason, reason=request.reason)
        runner.run_callbacks(store, getattr(task, request.kind, None), context, request.kind, ti)


def _record_unrunnable(store: Store, request: CallbackRequest, reason: str) -> None:
    """Leave a failed row, so callbacks that could not even be loaded are not silent."""
    log.error("cannot run %s of %s/%s: %s", request.kind, request.dag_id, request.run_id, reason)
    with store.session() as session:
        runs.record_callback(
            session,
            at=datetime.now(UTC),
            dag_id=request.dag_id,
            run_id=request.run_id,
            task_id=request.task_id,
            try_number=None,
            kind=request.kind,
            callback="(not loaded)",
            status="failed",
            duration=0.0,
            error=reason,
        )


def callback_main(
    request: CallbackRequest, payload: ConfigPayload, metrics_out: Connection | None = None
) -> None:
    """Child entry point for callbacks; exits non-zero if they could not be run at all.
    What the callbacks emit goes back to the executor through `metrics_out`."""
    config, store = _child_store(payload)
    relay = install_relay(config)
    try:
        run_callback_request(store, config, request, None)
    except Exception:
        log.exception("running %s of %s/%s failed", request.kind, request.dag_id, request.run_id)
        sys.exit(1)
    finally:
        store.dispose()
        if metrics_out is not None:
            try:
                metrics_out.send(Relayed(relay.drain()))
            except OSError:
                pass  # the executor is gone; so is anyone to read it
            metrics_out.close()
