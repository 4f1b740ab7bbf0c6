"""The local executor: each attempt in its own process, forked from a warm forkserver.

A child leads its own process group, opens its own metastore connections and records
the attempt through the runner; it only sends the recorded (state, error) back. The
parent watches the children's pipes and sentinels, so an attempt that dies without
recording an outcome (SIGKILL, OOM) still produces an event (`lost`).

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
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from typing import Any

from engine.config import Config
from engine.executors.attempt import attempt_main, callback_main, config_payload
from engine.executors.base import AttemptEvent, AttemptRequest, CallbackRequest
from engine.forking import describe_exit, kill_group, mp_context, warm_up
from engine.states import TaskState

log = logging.getLogger(__name__)


@dataclass
class _Child:
    """One running attempt process and what the parent knows about it."""

    request: AttemptRequest
    process: Any
    result: Connection | None  #: None once read (or at EOF)
    stop: Connection  #: carries the stop reason to the child before SIGTERM
    started: float
    outcome: tuple[str | None, str | None] | None = None
    stopped_at: float | None = None
    stop_reason: str | None = None
    killed: str | None = None  #: why the parent SIGKILLed it

    def read_outcome(self) -> None:
        if self.result is None or not self.result.poll():
            return
        try:
            self.outcome = self.result.recv()
        except (EOFError, OSError):
            pass
        self.result.close()
        self.result = None

    @property
    def done(self) -> bool:
        recorded = self.outcome is not None and self.outcome[0] is not None
        return recorded or self.process.exitcode is not None


@dataclass
class _Worker:
    """A process the executor reaps and may kill but reports nothing about."""

    process: Any
    label: str
    deadline: float


class LocalExecutor:
    """Runs up to `parallelism` attempts at once, each in a forked child process."""

    name = "local"
    #: seconds between SIGTERM and SIGKILL when an attempt is stopped
    kill_grace = 5.0
    #: seconds past `execution_timeout` before the attempt's process group is killed
    hard_timeout_grace = 10.0
    #: seconds a callback process may run before it is killed
    callback_timeout = 300.0

    def __init__(self, config: Config, parallelism: int | None = None) -> None:
        self.parallelism: int = parallelism or config["core.parallelism"]
        self._payload = config_payload(config)
        self._running: dict[int, _Child] = {}
        self._held: deque[AttemptRequest] = deque()
        self._others: list[_Worker] = []  # callbacks, and attempts exiting after reporting
        self._events: list[AttemptEvent] = []
        self._started = False
        self._ended = False

    # -- the Executor protocol -------------------------------------------------------

    def start(self) -> None:
        """Warm the forkserver up front, so the first attempt does not pay for imports."""
        if self._started:
            return
        self._started = True
        warm_up()
        atexit.register(self._at_exit)

    def queue(self, requests: Sequence[AttemptRequest]) -> None:
        if self._ended:
            raise RuntimeError("the local executor has ended; it takes no more attempts")
        self.start()
        known = self.running_ti_ids()
        for request in requests:
            if request.ti_id in known:
                log.warning("task instance %s is already running here; ignored", request.ti_id)
                continue
            known.add(request.ti_id)
            self._held.append(request)
        self._start_held()

    def queue_callbacks(self, requests: Sequence[CallbackRequest]) -> None:
        if self._ended:
            raise RuntimeError("the local executor has ended; it runs no more callbacks")
        self.start()
        for request in requests:
            process = mp_context().Process(
                target=callback_main,
                args=(request, self._payload),
                name=f"dagwatch-callback-{request.dag_id}",
            )
            process.start()
            label = f"{request.kind} of {request.dag_id}/{request.run_id}"
            self._others.append(_Worker(process, label, time.monotonic() + self.callback_timeout))

    def wait(self, timeout: float) -> bool:
        if self._events:
            return True
        self._enforce_deadlines()
        handles: list[Any] = []
        for child in self._running.values():
            if child.result is not None:
                handles.append(child.result)
            handles.append(child.process.sentinel)
        timeout = max(0.0, min(timeout, self._next_deadline() - time.monotonic()))
        if not handles:
            time.sleep(timeout)
            return False
        ready = wait_for(handles, timeout)
        self._enforce_deadlines()
        return bool(ready)

    def collect(self) -> list[AttemptEvent]:
        self._poll()
        events, self._events = self._events, []
        return events

    def running_ti_ids(self) -> set[int]:
        return set(self._running) | {request.ti_id for request in self._held}

    def terminate(self, ti_ids: Sequence[int], reason: str) -> None:
        """SIGTERM each attempt's process group; SIGKILL follows in `wait`/`collect` if it
        is still alive `kill_grace` s later. Held attempts are dropped (still queued)."""
        wanted = set(ti_ids)
        dropped = [r for r in self._held if r.ti_id in wanted]
        if dropped:
            self._held = deque(r for r in self._held if r.ti_id not in wanted)
            log.info("dropped %d held attempt(s) before they started: %s", len(dropped), reason)
        for ti_id in wanted:
            child = self._running.get(ti_id)
            if child is None or child.stopped_at is not None or child.done:
                continue
            try:
                child.stop.send(reason)
            except OSError:
                pass  # it is exiting already
            log.info("stopping task instance %s (pid %s): %s", ti_id, child.process.pid, reason)
            kill_group(child.process.pid, signal.SIGTERM)
            child.stopped_at, child.stop_reason = time.monotonic(), reason

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
        for worker in self._others:
            worker.deadline = min(worker.deadline, time.monotonic())  # killed in _poll
        if self._running:
            self.terminate(list(self._running), "the executor is shutting down")
        self._drain(time.monotonic() + self.kill_grace + 5.0)
        for child in self._running.values():
            log.error("attempt process %s did not exit; giving up on it", child.process.pid)
        atexit.unregister(self._at_exit)

    # -- internals -------------------------------------------------------------------

    def _spawn(self, request: AttemptRequest) -> None:
        context = mp_context()
        result_r, result_w = context.Pipe(duplex=False)
        stop_r, stop_w = context.Pipe(duplex=False)
        process = context.Process(
            target=attempt_main,
            args=(request, self._payload, result_w, stop_r),
            name=f"dagwatch-attempt-{request.ti_id}",
        )
        process.start()
        result_w.close()
        stop_r.close()
        self._running[request.ti_id] = _Child(
            request, process, result_r, stop_w, started=time.monotonic()
        )

    def _start_held(self) -> None:
        while self._held and not self._ended and len(self._running) < self.parallelism:
            self._spawn(self._held.popleft())

    def _poll(self) -> None:
        """Turn finished children into events, reap the others, fill freed slots."""
        for ti_id, child in list(self._running.items()):
            child.read_outcome()
            if not child.done:
                continue
            del self._running[ti_id]
            child.stop.close()
            if child.process.exitcode is None:
                child.process.join(0.2)  # it reported and is exiting: usually instant
            self._events.append(self._event(child))
            if child.process.exitcode is None:
                label = f"attempt of task instance {ti_id}"
                self._others.append(_Worker(child.process, label, time.monotonic() + 5.0))
            else:
                child.process.close()
        self._enforce_deadlines()
        self._reap_others()
        self._start_held()

    def _event(self, child: _Child) -> AttemptEvent:
        request = child.request
        state, error = child.outcome or (None, None)
        code = child.process.exitcode
        if state is None and error is None:
            error = f"attempt process exited with {describe_exit(code)} before recording an outcome"
            if child.killed:
                error += f" ({child.killed})"
        return AttemptEvent(
            ti_id=request.ti_id,
            dag_id=request.dag_id,
            run_id=request.run_id,
            task_id=request.task_id,
            state=TaskState(state) if state else None,
            exit_code=code,
            error=error,
            pid=child.process.pid,
        )

    def _deadline(self, child: _Child) -> float | None:
        """When the parent must SIGKILL this child, if ever."""
        if child.killed:
            return None
        deadlines = []
        if child.request.execution_timeout:
            timeout = child.request.execution_timeout + self.hard_timeout_grace
            deadlines.append(child.started + timeout)
        if child.stopped_at is not None:
            deadlines.append(child.stopped_at + self.kill_grace)
        return min(deadlines, default=None)

    def _next_deadline(self) -> float:
        deadlines = [d for c in self._running.values() if (d := self._deadline(c)) is not None]
        deadlines += [worker.deadline for worker in self._others]
        return min(deadlines, default=float("inf"))

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for child in self._running.values():
            deadline = self._deadline(child)
            if deadline is None or now < deadline or child.process.exitcode is not None:
                continue
            if child.stopped_at is not None and deadline == child.stopped_at + self.kill_grace:
                why = f"killed {self.kill_grace:g} s after SIGTERM: {child.stop_reason}"
            else:
                why = (
                    f"killed: still running {self.hard_timeout_grace:g} s after its "
                    f"execution_timeout of {child.request.execution_timeout:g} s"
                )
            log.warning("task instance %s: %s", child.request.ti_id, why)
            kill_group(child.process.pid, signal.SIGKILL, tree=True)
            child.killed = why

    def _reap_others(self) -> None:
        now = time.monotonic()
        alive = []
        for worker in self._others:
            code = worker.process.exitcode
            if code is not None:
                if code != 0:
                    log.warning("%s exited with %s", worker.label, describe_exit(code))
                worker.process.close()
                continue
            if now >= worker.deadline:
                log.warning("%s is still running; killing it", worker.label)
                kill_group(worker.process.pid, signal.SIGKILL, tree=True)
                worker.deadline = float("inf")
            alive.append(worker)
        self._others = alive

    def _drain(self, deadline: float) -> None:
        """Collect events until nothing runs or `deadline` passes (events stay buffered)."""
        while (self._running or self._others) and time.monotonic() < deadline:
            self.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            self._poll()

    def _at_exit(self) -> None:
        """An interpreter exiting without `end()` must not leave attempts behind."""
        if not self._ended and (self._running or self._others):
            self.end(grace=0.0)
