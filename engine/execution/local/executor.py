"""The local executor: `parallelism` long-lived worker processes run the attempts.

Workers are forked from a template process that warmed a metastore engine up once
(`engine.execution.local.pool`, `.worker_template`) and stay (`.worker`): each keeps
that warm engine and the DAG files it imported. Each attempt runs in its worker, or in a
process the worker forks for it (`core.attempt_isolation`); either records the attempt
through the runner. The worker reports the pid of the process running the attempt once
it starts, then (state, error, exit code) once it ended (`engine.execution.messages`).
So an attempt that dies without recording an outcome (SIGKILL, OOM), or whose worker
dies, still produces an event (`lost`), with that pid. A dead worker is replaced, and so
is one that exits because an attempt changed it. Attempts go to an idle worker that
already imported their DAG file when there is one.
Stopping an attempt sends its worker the reason; the process group running the attempt
then gets SIGTERM (from the worker that forked it, or from here when the worker runs it
itself), and SIGKILL from here `kill_grace` s later.

Nothing an attempt started outlives it (`engine.execution.reaper`): the process that
supervises it (its worker or attempt process) kills what the task left running before
the outcome is recorded, and when that process dies the next one up (the worker, or the
template for a dead worker) kills the rest before it reports the death. So a lost event
leaves here only once nothing of the attempt runs, and the scheduler's retry (or
failure) of it never overlaps it. The tree kills here are a second line, for a template
that is gone.

Attempts beyond `parallelism` are held here in FIFO order and started as slots free up.
`end()` drops the held ones: their task instances stay `queued`, and the scheduler's
start-up recovery resets queued task instances that no executor is running.
"""

from __future__ import annotations

import atexit
import logging
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for

from engine.config import Config
from engine.execution import forkserver
from engine.execution.attempt import callback_main, config_payload
from engine.execution.base import AttemptEvent, AttemptRequest, CallbackRequest
from engine.execution.local.pool import WorkerHandle, WorkerPool
from engine.execution.messages import (
    Done,
    Ready,
    Relayed,
    Retiring,
    RunAttempt,
    Started,
    StopAttempt,
)
from engine.execution.reaper import describe_exit, kill_group
from engine.states import TaskState
from metrics import stats

log = logging.getLogger(__name__)


@dataclass
class _Attempt:
    """One attempt handed to a worker, and what the executor knows about it."""

    request: AttemptRequest
    worker: WorkerHandle
    started: float
    pid: int | None = None  #: the attempt process, once the worker forked it
    stopped_at: float | None = None
    stop_reason: str | None = None
    killed: str | None = None  #: why the executor SIGKILLed it


@dataclass
class _Other:
    """A process the executor reaps and may kill but reports nothing about."""

    process: forkserver.Child
    label: str
    deadline: float
    metrics_in: Connection  #: what its callbacks emitted, sent as it exits

    def read_metrics(self) -> None:
        try:
            while self.metrics_in.poll():
                message = self.metrics_in.recv()
                if isinstance(message, Relayed):
                    stats.replay(message.metrics)
        except (EOFError, OSError):
            pass  # it exited without sending any


class LocalExecutor:
    """Runs up to `parallelism` attempts at once, each in its own process."""

    name = "local"
    #: seconds between SIGTERM and SIGKILL when an attempt is stopped
    kill_grace = 5.0
    #: seconds past `execution_timeout` before the attempt's process group is killed
    hard_timeout_grace = 10.0
    #: seconds a callback process may run before it is killed
    callback_timeout = 300.0
    #: DAG files (versions) a worker keeps imported
    dag_cache_files = 8
    #: seconds an idle worker (and the DAG files it holds) is kept for the next attempt
    #: (`core.worker_idle_timeout`)
    worker_idle_timeout = 60.0

    def __init__(self, config: Config, parallelism: int | None = None) -> None:
        self.parallelism: int = parallelism or config["core.parallelism"]
        self.worker_idle_timeout = config["core.worker_idle_timeout"]
        self._payload = config_payload(config)
        self._pool = WorkerPool(self._payload, self.parallelism, self.dag_cache_files)
        self._running: dict[int, _Attempt] = {}
        self._held: deque[AttemptRequest] = deque()
        self._others: list[_Other] = []  # callback processes
        self._events: list[AttemptEvent] = []
        self._started = False
        self._ended = False

    # -- the Executor protocol -------------------------------------------------------

    def start(self) -> None:
        """Start the worker template, which warms up while the scheduler gets going; the
        workers are forked from it as attempts need them."""
        if self._started:
            return
        self._started = True
        forkserver.warm_up()
        atexit.register(self._at_exit)
        self._pool.size, self._pool.max_files = self.parallelism, self.dag_cache_files
        self._pool.start()

    def queue(self, requests: Sequence[AttemptRequest]) -> None:
        if self._ended:
            raise RuntimeError("the local executor has ended; it takes no more attempts")
        self.start()
        held = {request.ti_id for request in self._held}
        for request in requests:
            if request.ti_id in held:
                log.warning("task instance %s is already queued here; ignored", request.ti_id)
                continue
            if request.ti_id in self._running:  # its last attempt is still running callbacks
                log.info("task instance %s waits for its previous attempt to exit", request.ti_id)
            held.add(request.ti_id)
            self._held.append(request)
        self._start_held()

    def queue_callbacks(self, requests: Sequence[CallbackRequest]) -> None:
        if self._ended:
            raise RuntimeError("the local executor has ended; it runs no more callbacks")
        self.start()
        for request in requests:
            metrics_in, metrics_out = Pipe(duplex=False)
            try:
                process = forkserver.start(
                    callback_main, request, self._payload, metrics_out,
                    name=f"dagwatch-callback-{request.dag_id}",
                )  # fmt: skip
            finally:
                metrics_out.close()
            label = f"{request.kind} of {request.dag_id}/{request.run_id}"
            deadline = time.monotonic() + self.callback_timeout
            self._others.append(_Other(process, label, deadline, metrics_in))

    def wait(self, timeout: float) -> bool:
        """Block until an attempt ends (True) or `timeout` passes (False)."""
        until = time.monotonic() + timeout
        self._poll()
        while not self._events:
            handles = self._pool.handles() if self._started else []
            now = time.monotonic()
            remaining = min(until, self._next_deadline()) - now
            if remaining <= 0 and now >= until:
                break
            if not handles:
                time.sleep(max(0.0, remaining))
            else:
                wait_for(handles, max(0.0, remaining))
            self._poll()
        return bool(self._events)

    def collect(self) -> list[AttemptEvent]:
        self._poll()
        events, self._events = self._events, []
        return events

    def running_ti_ids(self) -> set[int]:
        # Copies taken in one C call each, so another thread (/health) may read this
        # while the loop queues and starts attempts.
        return set(self._running) | {request.ti_id for request in tuple(self._held)}

    def terminate(self, ti_ids: Sequence[int], reason: str) -> None:
        """Have each attempt's worker SIGTERM its process group; SIGKILL follows in
        `wait`/`collect` if it is still running `kill_grace` s later. Held attempts are
        dropped (still queued)."""
        wanted = set(ti_ids)
        dropped = [r for r in self._held if r.ti_id in wanted]
        if dropped:
            self._held = deque(r for r in self._held if r.ti_id not in wanted)
            log.info("dropped %d held attempt(s) before they started: %s", len(dropped), reason)
        for ti_id in wanted:
            attempt = self._running.get(ti_id)
            if attempt is None or attempt.stopped_at is not None:
                continue
            self._pool.send(attempt.worker, StopAttempt(ti_id, reason))
            log.info("stopping task instance %s (pid %s): %s", ti_id, attempt.pid, reason)
            attempt.stopped_at, attempt.stop_reason = time.monotonic(), reason
            self._signal_stop(attempt)

    @property
    def open_slots(self) -> int:
        return max(0, self.parallelism - len(self._running) - len(self._held))

    def end(self, grace: float) -> None:
        """Start nothing more; give running attempts `grace` s, then stop them (bounded)."""
        self._ended = True
        if self._held:
            log.warning(
                "dropping %d attempt(s) that had not started; their task instances stay queued",
                len(self._held),
            )
            self._held.clear()
        self._drain(time.monotonic() + grace)
        for other in self._others:
            other.deadline = min(other.deadline, time.monotonic())  # killed in _poll
        if self._running:
            self.terminate(list(self._running), "the executor is shutting down")
        self._drain(time.monotonic() + self.kill_grace + 5.0)
        for attempt in self._running.values():
            log.error("attempt process %s did not exit; giving up on it", attempt.pid)
        self._pool.stop(time.monotonic() + 5.0)
        atexit.unregister(self._at_exit)

    # -- workers ---------------------------------------------------------------------

    def _idle_worker(self, fileloc: str) -> WorkerHandle | None:
        """An idle worker, preferring one that already imported `fileloc`; else a new one."""
        idle = [w for w in self._pool.workers if w.available]
        best = max(idle, key=lambda w: (fileloc in w.files, w.ready), default=None)
        return best or self._pool.spawn()

    def _retire_idle(self) -> None:
        """Let workers idle for `worker_idle_timeout` go, with the DAG files they hold."""
        expired = time.monotonic() - self.worker_idle_timeout
        for worker in self._pool.workers:
            if worker.available and worker.idle_since <= expired:
                self._pool.retire(worker)

    def _on_message(self, worker: WorkerHandle, message: object) -> None:
        attempt = worker.attempt
        match message:
            case Ready():
                worker.ready = True
            case Started(ti_id=ti_id, pid=pid) if attempt and attempt.request.ti_id == ti_id:
                attempt.pid = pid
                if attempt.stopped_at is not None:  # stopped before it started
                    self._signal_stop(attempt)
            case Retiring(ti_id=ti_id, reason=reason) if attempt and attempt.request.ti_id == ti_id:
                worker.retiring = True
                log.info("worker %s exits after its attempt: %s", worker.pid, reason)
            case Done(ti_id=ti_id) if attempt and attempt.request.ti_id == ti_id:
                stats.replay(message.metrics)
                worker.attempt, worker.idle_since = None, time.monotonic()
                del self._running[ti_id]
                self._events.append(
                    self._event(
                        attempt, message.state, message.error, message.exit_code, message.pid
                    )
                )
            case _:
                log.warning("unexpected message from worker %s: %s", worker.pid, message)

    def _signal_stop(self, attempt: _Attempt) -> None:
        """SIGTERM an attempt its worker runs itself (a worker that forked the attempt
        process signals that process when the stop message reaches it)."""
        if attempt.pid is not None and attempt.pid == attempt.worker.pid:
            kill_group(attempt.pid, signal.SIGTERM)

    def _lose(self, worker: WorkerHandle, code: int | None) -> None:
        """A worker exited: if it had an attempt, report it lost and kill what it left."""
        level = logging.DEBUG if worker.retiring and code == 0 else logging.WARNING
        log.log(level, "worker %s exited with %s", worker.pid, describe_exit(code))
        attempt = worker.attempt
        if attempt is None:
            return
        # An exit code means the template reaped the worker and killed and reaped all it
        # left, so those pids may be anyone's by now; without one, the template is gone
        # and did not: kill what can still be found from the attempt's pid.
        if attempt.pid is not None and code is None:
            kill_group(attempt.pid, signal.SIGKILL, tree=True)
        del self._running[attempt.request.ti_id]
        error = (
            f"the worker running the attempt exited with {describe_exit(code)} "
            "before the attempt recorded an outcome"
        )
        if attempt.killed:
            error += f" ({attempt.killed})"
        if worker.ended:
            error += f"; {worker.ended}"
        self._events.append(self._event(attempt, None, error, code, attempt.pid))

    # -- attempts --------------------------------------------------------------------

    def _start_held(self) -> None:
        waiting: list[AttemptRequest] = []  # retries whose previous attempt has not exited
        try:
            while self._held and not self._ended and len(self._running) < self.parallelism:
                if self._held[0].ti_id in self._running:
                    waiting.append(self._held.popleft())
                    continue
                if not self._start_next():
                    return
        finally:
            self._held.extendleft(reversed(waiting))

    def _start_next(self) -> bool:
        """Start the first held request on an idle worker; False when none is idle."""
        worker = self._idle_worker(self._held[0].fileloc)
        if worker is None:
            return False
        request = self._held.popleft()
        attempt = _Attempt(request, worker, started=time.monotonic())
        worker.attempt = attempt
        self._running[request.ti_id] = attempt
        worker.files[request.fileloc] = None
        worker.files.move_to_end(request.fileloc)
        while len(worker.files) > self.dag_cache_files:
            worker.files.popitem(last=False)
        self._pool.send(worker, RunAttempt(request))  # if it died, `_poll` reports it lost
        return True

    def _poll(self) -> None:
        """Read the workers' reports, enforce deadlines, reap, fill freed slots."""
        if self._started:
            self._read_workers()
        self._enforce_deadlines()
        self._reap_others()
        self._start_held()
        if self._started and not self._ended:
            self._retire_idle()

    def _read_workers(self) -> None:
        messages, gone = self._pool.poll()
        for worker, message in messages:
            self._on_message(worker, message)
        for worker, code in gone:
            self._lose(worker, code)

    def _event(
        self,
        attempt: _Attempt,
        state: str | None,
        error: str | None,
        code: int | None,
        pid: int | None,
    ) -> AttemptEvent:
        request = attempt.request
        if state is None and error is None:
            error = f"attempt process exited with {describe_exit(code)} before recording an outcome"
            if attempt.killed:
                error += f" ({attempt.killed})"
        return AttemptEvent(
            ti_id=request.ti_id,
            dag_id=request.dag_id,
            run_id=request.run_id,
            task_id=request.task_id,
            state=TaskState(state) if state else None,
            exit_code=code,
            error=error,
            pid=pid,
        )

    def _deadline(self, attempt: _Attempt) -> float | None:
        """When the executor must SIGKILL this attempt, if ever."""
        if attempt.killed:
            return None
        deadlines = []
        if attempt.request.execution_timeout:
            timeout = attempt.request.execution_timeout + self.hard_timeout_grace
            deadlines.append(attempt.started + timeout)
        if attempt.stopped_at is not None:
            deadlines.append(attempt.stopped_at + self.kill_grace)
        return min(deadlines, default=None)

    def _next_deadline(self) -> float:
        deadlines = [d for a in self._running.values() if (d := self._deadline(a)) is not None]
        deadlines += [other.deadline for other in self._others]
        if self._started and not self._ended:
            deadlines.append(self._pool.next_deadline())
            idle = [w.idle_since for w in self._pool.workers if w.available]
            deadlines.append(min(idle, default=float("inf")) + self.worker_idle_timeout)
            if self._held:
                deadlines.append(self._pool.respawn_at())
        return min(deadlines, default=float("inf"))

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for attempt in list(self._running.values()):
            deadline = self._deadline(attempt)
            if deadline is None or now < deadline:
                continue
            self._read_workers()  # it may have ended meanwhile
            if self._running.get(attempt.request.ti_id) is not attempt:
                continue
            if attempt.stopped_at is not None and deadline == attempt.stopped_at + self.kill_grace:
                why = f"killed {self.kill_grace:g} s after SIGTERM: {attempt.stop_reason}"
            else:
                why = (
                    f"killed: still running {self.hard_timeout_grace:g} s after its "
                    f"execution_timeout of {attempt.request.execution_timeout:g} s"
                )
            if attempt.pid is not None:
                kill_group(attempt.pid, signal.SIGKILL, tree=True)
            elif not self._pool.kill(attempt.worker):  # still importing the DAG file
                continue  # not even forked by the template yet: try again later
            log.warning("task instance %s: %s", attempt.request.ti_id, why)
            attempt.killed = why

    def _reap_others(self) -> None:
        now = time.monotonic()
        alive = []
        for other in self._others:
            other.read_metrics()
            code = other.process.exitcode
            if code is not None:
                if code != 0:
                    log.warning("%s exited with %s", other.label, describe_exit(code))
                other.read_metrics()
                other.metrics_in.close()
                other.process.close()
                continue
            if now >= other.deadline:
                log.warning("%s is still running; killing it", other.label)
                kill_group(other.process.pid, signal.SIGKILL, tree=True)
                other.deadline = float("inf")
            alive.append(other)
        self._others = alive

    def _drain(self, deadline: float) -> None:
        """Collect events until nothing runs or `deadline` passes (events stay buffered)."""
        while (self._running or self._others) and time.monotonic() < deadline:
            self.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._poll()

    def _at_exit(self) -> None:
        """An interpreter exiting without `end()` must not leave attempts behind."""
        if not self._ended and (self._running or self._others or self._pool.workers):
            self.end(grace=0.0)
