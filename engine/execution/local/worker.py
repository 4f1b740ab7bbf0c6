"""A local-executor worker: cached DAG files, and the attempts it is given, one at a time.

Workers are forked from the executor's template (`engine.execution.local.worker_template`), so each
starts with a metastore engine whose statement cache is warm; a worker keeps the DAG
files it imported (by version, least recently used dropped). It leads its own process
group, apart from the scheduler: killing it, or an attempt in it, harms neither the
scheduler nor other workers. It is the child subreaper of what its attempts start
(`engine.execution.reaper`): whatever an attempt left running, however it detached, is
killed and reaped before the attempt's outcome is recorded, so a retry never starts
beside it. How it isolates attempts is `core.attempt_isolation`:

`worker` (the default): the worker runs the attempt itself, through `run_attempt`. An
attempt so costs no fork, no page copies and no process exit: about half the CPU of a
forked one (docs/performance.md). Before an attempt it notes what a task could leave
changed (`engine.execution.local.reuse_check`: environment, working directory, signal handlers,
threads and child processes still running, memory); a worker that finds a change after
the attempt, that had to kill processes the attempt left, or whose attempt was stopped,
failed outside the task or was its `core.worker_max_attempts`th, exits, and a fresh one
from the template serves the next attempt. SIGTERM from the executor raises inside the
task, as in a process of its own.

`process`: for each attempt it forks a child that leads its own process group and runs
the task, so every attempt starts from the worker's state as it was, module globals
included. The worker records a plain attempt itself, with the connection it keeps:
queued → running before the fork, the outcome once the attempt process has exited, and
in between only the attempt's pid. A forked process pays a page copy for every page
either process writes while both live, and a first metastore transaction in a fresh
fork writes thousands of them; written outside the child's life, they cost the worker
nothing extra. A task with callbacks is recorded by its attempt process, as
`run_attempt` does, so its callbacks run after its state is recorded. The child never
uses nor closes the worker's connection: it keeps the inherited pool referenced, drops it
from its engine (SQLAlchemy's post-fork recipe) and connects afresh if the task needs the
metastore (XComs, Variables, heartbeats of a long task).

The messages on the worker's connection, and on the pipes to its attempt process, are
those of `engine.execution.messages`. `run` is the one path an attempt takes here, with
the isolation mode as its parameter: what changes is only which process runs the task
and which records it.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import logging
import os
import pickle
import select
import signal
from dataclasses import dataclass, field
from enum import StrEnum
from multiprocessing.connection import Connection, Pipe
from typing import Any, NoReturn

from engine import masking
from engine.config import Config
from engine.execution import forkserver, reaper, runner
from engine.execution.attempt import (
    DagCache,
    Ran,
    StopHandler,
    UnrunnableAttempt,
    hostname,
    load_dag,
    refuse,
    run_here,
)
from engine.execution.base import AttemptRequest
from engine.execution.local import reuse_check
from engine.execution.messages import (
    Done,
    Exit,
    Go,
    Outcome,
    Ready,
    Retiring,
    RunAttempt,
    Started,
    StopAttempt,
)
from engine.execution.reaper import kill_group
from engine.observability.child_metrics import install_relay
from engine.store import runs
from engine.store.db import Store
from metrics.relay import RelayBackend

log = logging.getLogger(__name__)
_TERM = {signal.SIGTERM}
#: ms between checks on an attempt process where pidfd_open is unavailable
_POLL_MS = 50
#: Task callbacks that must run after the attempt's state is recorded.
_CALLBACKS = (
    "on_execute_callback",
    "on_success_callback",
    "on_failure_callback",
    "on_retry_callback",
    "on_skipped_callback",
)
#: In an attempt process: the worker's pool, kept referenced so its connections are never
#: closed (nor used) here.
_inherited_pools: list[Any] = []


class Isolation(StrEnum):
    """How a worker keeps attempts apart (`core.attempt_isolation`)."""

    #: the worker runs the attempt itself, and retires if the attempt changed it
    WORKER = "worker"
    #: a process forked from the worker runs the attempt
    PROCESS = "process"


def serve_worker(conn: Connection, store: Store, config: Config, max_files: int) -> None:
    """A worker's life, in a process just forked from the template."""
    os.setpgrp()  # its own group: killing it (and what it spawned) spares its siblings
    reaper.become_subreaper()  # what its attempts start stays its own, however it detaches
    isolation = Isolation(config["core.attempt_isolation"])
    worker = Worker(conn, store, config, DagCache(max_files), install_relay(config), isolation)
    worker.send(Ready())
    worker.serve()


@dataclass
class _Child:
    """One attempt process, seen from its worker (raw descriptors: the worker's pages are
    shared with the child while it runs, and every object touched then gets copied)."""

    pid: int
    result: int  #: read end of the pipe the `Outcome` arrives on
    stop: Connection  #: `Go` lets it start; `StopAttempt`s follow
    exited: int | None  #: a pidfd, readable once it exits (None: poll instead)
    data: bytearray = field(default_factory=bytearray)
    stopped: bool = False

    def read(self) -> bool:
        """Take what the pipe holds; False at end of file."""
        while True:
            try:
                chunk = os.read(self.result, 65536)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    return True
                raise
            if not chunk:
                return False
            self.data += chunk

    def outcome(self) -> Outcome:
        """The attempt's outcome as its process wrote it (empty if it wrote none)."""
        try:
            outcome = pickle.loads(self.data)
        except Exception:  # nothing (or half an outcome) arrived
            return Outcome()
        return outcome if isinstance(outcome, Outcome) else Outcome()

    def reap(self, block: bool) -> int | None:
        """Its exit code (negative: killed by that signal), or None while it runs."""
        pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        return os.waitstatus_to_exitcode(status) if pid else None

    def close(self) -> None:
        os.close(self.result)
        self.stop.close()
        if self.exited is not None:
            os.close(self.exited)


class Worker:
    """Serves the executor's requests one attempt at a time."""

    def __init__(
        self,
        conn: Connection,
        store: Store,
        config: Config,
        cache: DagCache,
        relay: RelayBackend,
        isolation: Isolation = Isolation.WORKER,
    ) -> None:
        self.conn = conn
        self.store = store
        self.config = config
        self.cache = cache
        self.relay = relay  #: the metrics of what the worker records itself
        self.isolation = isolation
        self.listening = True  #: False once the executor is gone
        self.exiting = False
        self._imports = 0
        self.max_attempts: int = config["core.worker_max_attempts"]
        self.attempts = 0
        self._memory_baseline = 0  #: resident bytes before the first attempt ran here

    def send(self, message: object) -> None:
        try:
            self.conn.send(message)
        except OSError:  # the executor is gone: finish what runs, then exit
            self.listening = False

    def serve(self) -> None:
        while self.listening and not self.exiting:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                return
            match message:
                case Exit():
                    return
                case RunAttempt(request=request):
                    self.run(request)
                # a StopAttempt for an attempt that already ended: nothing left to stop

    def run(self, request: AttemptRequest) -> None:
        """Run one attempt, isolated as `self.isolation` says, and report how it ended
        (`Done`, masked, with the metrics recorded meanwhile)."""
        if self.isolation is Isolation.WORKER:
            done = self._run_here(request)
        else:
            done = self._run_forked(request)
        error = masking.redact(done.error) if done.error else done.error  # what we know
        self.send(dataclasses.replace(done, error=error, metrics=done.metrics + self.relay.drain()))

    def _load(self, request: AttemptRequest) -> Any:
        dag = load_dag(request.fileloc, request.dag_id, request.task_id, self.cache)
        if self.cache.imports != self._imports:
            # New DAG objects: age them now (the template's and fork server's are frozen, so
            # this scans little), or every attempt's young-generation collections would.
            self._imports = self.cache.imports
            gc.collect()
        return dag

    # -- Isolation.WORKER: the attempt runs in this process ------------------------------

    def _run_here(self, request: AttemptRequest) -> Done:
        """Run the attempt in this process, as `run_attempt` does, then exit if a fresh
        worker must serve the next one (`_why_retire`). SIGTERM from the executor
        (`terminate`) raises inside the task, as in an attempt process of its own."""
        pid = os.getpid()
        stop = StopHandler(_StopReasons(self.conn, request.ti_id, self))
        signal.signal(signal.SIGTERM, stop)
        self.send(Started(request.ti_id, pid))
        try:
            ran, changes = self._attempt_here(request, pid, stop)
        finally:
            stop.cancel()  # stays installed: a late SIGTERM must not end the worker
        self.attempts += 1
        retire = self._why_retire(stop, changes)
        if retire:
            log.info("worker %s exits after task instance %s: %s", pid, request.ti_id, retire)
            self.send(Retiring(request.ti_id, retire))  # before Done: never given more
            self.exiting = True
        state = ran.state.value if ran.state else None
        return Done(request.ti_id, pid, state, ran.error, 1 if ran.broken else 0)

    def _attempt_here(
        self, request: AttemptRequest, pid: int, stop: StopHandler
    ) -> tuple[Ran, str | None]:
        """How the attempt ended, and what it changed in this process (None: nothing)."""
        marks: list[reuse_check.Marks] = []
        ended: list[reaper.Ended] = []

        def ready() -> None:  # the DAG is loaded: what the attempt finds, it must leave
            self._memory_baseline = self._memory_baseline or reuse_check.resident_bytes()
            marks.append(reuse_check.Marks.take())

        ran = run_here(
            self.store, self.config, request, self._load, ready=ready, pid=pid,
            end_processes=lambda: ended.append(reaper.end_attempt_processes()),
            on_moved=stop.stop_self, contain=BaseException,
        )  # fmt: skip
        if ran.broken:  # the outcome is unknown: let a fresh worker on
            return ran, "the attempt failed outside the task"
        if not marks:  # refused: nothing of the task ran
            return ran, None
        # A worker that had to kill children retires too: the task's objects for them (a
        # Popen it never waited for) would act on their pids once recycled.
        found = [ended[0].describe() if ended else None, marks[0].changes(self._memory_baseline)]
        return ran, "; ".join(filter(None, found)) or None

    def _why_retire(self, stop: StopHandler, changes: str | None) -> str | None:
        """Why this worker must not run another attempt, if it must not."""
        if stop.requested:
            return f"the attempt was stopped ({stop.reason})"
        if signal.getsignal(signal.SIGTERM) is not stop:
            return "the task replaced the SIGTERM handler"
        if changes is None and self.max_attempts and self.attempts >= self.max_attempts:
            return f"it ran {self.attempts} attempts (core.worker_max_attempts)"
        return changes

    # -- Isolation.PROCESS: the attempt runs in a process forked for it ------------------

    def _run_forked(self, request: AttemptRequest) -> Done:
        """Fork a process for the attempt and supervise it. A plain task's process only
        runs the task: this worker records the attempt (`begin` before the fork, the
        outcome after the process exited). A task with callbacks is recorded by its
        process, as `run_attempt` does, so its callbacks run after its state is recorded."""
        try:
            dag = self._load(request)
        except UnrunnableAttempt as exc:
            refused, why = refuse(self.store, request, exc)
            return Done(request.ti_id, None, refused.value if refused else None, why, None)
        begun = None
        if not any(getattr(dag.get_task(request.task_id), name, None) for name in _CALLBACKS):
            try:
                begun = runner.begin_attempt(
                    self.store, self.config, request.ti_id, hostname=hostname()
                )
            except Exception as exc:  # as if its attempt process had failed before the task
                log.exception("task instance %s could not begin", request.ti_id)
                why = f"the attempt could not begin: {type(exc).__name__}: {exc}"
                return Done(request.ti_id, None, None, why, 1)
        child = self._fork(request, dag, begun)
        if begun is not None:
            self._record_pid(request, begun, child.pid)
        self.send(Started(request.ti_id, child.pid))
        child.stop.send(Go())
        code = self._supervise(request, child)
        reaper.end_attempt_processes()  # those the attempt process left here as it exited
        outcome = child.outcome()
        if begun is None:
            return Done(
                request.ti_id, child.pid, outcome.result, outcome.error, code, outcome.metrics
            )
        state, error = self._finish(dag, begun, outcome)
        return Done(request.ti_id, child.pid, state, error, code, outcome.metrics)

    def _record_pid(self, request: AttemptRequest, begun: runner.Begun, pid: int) -> None:
        try:
            with self.store.engine.begin() as connection:
                runs.record_attempt_pid(connection, request.ti_id, begun.row.try_number, pid)
        except Exception as exc:  # its heartbeats still show it alive
            log.warning("pid of task instance %s not recorded: %s", request.ti_id, exc)

    def _finish(
        self, dag: Any, begun: runner.Begun, outcome: Outcome
    ) -> tuple[str | None, str | None]:
        """Record the outcome of a task its attempt process ran: (state, error)."""
        if not isinstance(outcome.result, runner.Executed):
            return None, outcome.error  # it failed outside the task, or died
        try:
            with runner.attempt_logging(begun.path):
                result = runner.finish_attempt(self.store, dag, begun, outcome.result)
        except Exception as exc:  # reported like an attempt process that failed here
            log.exception("outcome of task instance %s not recorded", begun.row.id)
            return None, f"the outcome could not be recorded: {type(exc).__name__}: {exc}"
        return result.state.value, result.error

    def _fork(self, request: AttemptRequest, dag: Any, begun: runner.Begun | None) -> _Child:
        result_r, result_w = os.pipe()
        stop_r, stop_w = Pipe(duplex=False)
        # SIGTERM waits (blocked) until the child has its handler and the go-ahead.
        signal.pthread_sigmask(signal.SIG_BLOCK, _TERM)
        try:
            pid = os.fork()
            if pid == 0:
                self.conn.close()
                stop_w.close()
                os.close(result_r)
                _attempt_child(self.store, self.config, request, dag, begun, result_w, stop_r)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _TERM)
        os.close(result_w)
        stop_r.close()
        os.set_blocking(result_r, False)
        return _Child(pid, result_r, stop_w, _pidfd(pid))

    def _supervise(self, request: AttemptRequest, child: _Child) -> int:
        """Relay stop requests and collect the outcome until the attempt process exits."""
        poller = select.poll()
        for fd in (child.result, child.exited, self.conn.fileno() if self.listening else None):
            if fd is not None:
                poller.register(fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll(None if child.exited is not None else _POLL_MS)}
            if self.listening and self.conn.fileno() in ready and not self._control(request, child):
                poller.unregister(self.conn.fileno())
            if child.result in ready and not child.read():
                poller.unregister(child.result)
            if child.exited is None or child.exited in ready:
                code = child.reap(block=child.exited is not None)
                if code is not None:
                    child.read()  # what it wrote before exiting
                    child.close()
                    return code

    def _control(self, request: AttemptRequest, child: _Child) -> bool:
        """Handle a message that arrived mid-attempt; False once the executor is gone."""
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self.listening = False  # let the attempt finish; exit afterwards
            return False
        match message:
            case StopAttempt(ti_id=ti_id) if ti_id == request.ti_id and not child.stopped:
                child.stopped = True
                try:
                    child.stop.send(message)
                except OSError:
                    pass  # it is exiting already
                kill_group(child.pid, signal.SIGTERM)
            case Exit():
                self.exiting = True
            case RunAttempt(request=dropped):
                log.error("worker got an attempt while busy; dropped: %s", dropped)
        return True


class _StopReasons:
    """Where the StopHandler of an attempt reads why it is stopped: the `StopAttempt`
    messages on a connection (the worker's, for an attempt it runs itself, or the stop
    pipe of an attempt process); an `Exit` read meanwhile is noted on `worker`."""

    def __init__(self, conn: Connection, ti_id: int, worker: Worker | None = None) -> None:
        self.conn = conn
        self.ti_id = ti_id
        self.worker = worker

    def poll(self) -> bool:
        return (self.worker is None or self.worker.listening) and self.conn.poll()

    def recv(self) -> str:
        reason = "stopped by the executor"
        while self.conn.poll():
            match self.conn.recv():
                case StopAttempt(ti_id=ti_id, reason=why) if ti_id == self.ti_id:
                    reason = why
                case Exit() if self.worker is not None:
                    self.worker.exiting = True
        return reason


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _attempt_child(
    store: Store,
    config: Config,
    request: AttemptRequest,
    dag: Any,
    begun: runner.Begun | None,
    result: int,
    stop: Connection,
) -> NoReturn:
    """The attempt process: own group, own connections, run, report, exit (never return).
    With `begun` (the worker recorded it as running), it runs the task and reports an
    `Executed` for the worker to record; without, it records the whole attempt itself."""
    code = 1
    try:
        os.setpgrp()
        reaper.become_subreaper()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        handler = StopHandler(_StopReasons(stop, request.ti_id))
        signal.signal(signal.SIGTERM, handler)
        if not isinstance(stop.recv(), Go):
            raise RuntimeError("the worker did not let the attempt start")
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _TERM)  # a pending stop lands now
        _inherited_pools.append(store.engine.pool)  # the worker's: never used nor closed here
        store.engine.dispose(close=False)
        relay = install_relay(config)
        code, outcome = _run_in_child(store, config, request, dag, begun, handler)
        data = memoryview(pickle.dumps(dataclasses.replace(outcome, metrics=relay.drain())))
        while data:
            data = data[os.write(result, data) :]
        store.dispose()
    except BaseException:
        log.exception("attempt process of task instance %s failed", request.ti_id)
    finally:
        forkserver.exit_child(code)


def _run_in_child(
    store: Store,
    config: Config,
    request: AttemptRequest,
    dag: Any,
    begun: runner.Begun | None,
    stop: StopHandler,
) -> tuple[int, Outcome]:
    """(exit code, outcome) of the attempt, or of its task when `begun`; a task instance
    marked meanwhile stops the attempt as the executor's SIGTERM would (`stop`)."""
    if begun is None:  # the whole attempt, as every executor runs it
        ran = run_here(
            store, config, request, lambda _request: dag,
            end_processes=reaper.end_attempt_processes, on_moved=stop.stop_self,
            contain=BaseException,
        )  # fmt: skip
        error = masking.redact(ran.error) if ran.error else None  # its worker knows fewer secrets
        return (1 if ran.broken else 0), Outcome(ran.state.value if ran.state else None, error)
    try:  # only the task: its worker records the attempt
        with runner.attempt_logging(begun.path):
            executed = runner.execute_attempt(store, config, dag, begun, on_moved=stop.stop_self)[0]
            reaper.end_attempt_processes()
    except BaseException as exc:  # the outcome is unknown: report, exit non-zero
        log.exception("attempt of task instance %s failed outside the task", request.ti_id)
        error = masking.redact(f"the attempt failed outside the task: {type(exc).__name__}: {exc}")
        return 1, Outcome(None, error)
    return 0, Outcome(executed)
