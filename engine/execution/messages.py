"""Every message the local executor, its processes and the fork server exchange.

Each is a frozen dataclass sent pickled over a pipe or socket; a receiver dispatches on
its type (`match`), never on a position in a tuple. Who sends what:

  executor → worker:   RunAttempt | StopAttempt | Exit
  worker → executor:   Ready | Started | Retiring | Done
  executor → template: SpawnWorker (then the worker's socket, as SCM_RIGHTS) | Exit
  template → executor: Spawned | Exited
  worker → attempt process (its stop pipe): Go | StopAttempt
  attempt process → worker (its outcome pipe): Outcome
  callback process → executor: Relayed
  client → fork server: Fork (with the child's descriptors, as SCM_RIGHTS)
  fork server → client (the child's status socket): Forked | Reaped

`Started` goes out before the attempt may begin, so the executor always knows the pid
of the process that runs it (and kills it if the worker dies); that is the worker's own
pid when the worker runs the attempt itself. `Retiring` comes before `Done`, so the
executor never hands an exiting worker another attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.execution.base import AttemptRequest

#: what a process's metrics relay recorded (`metrics.relay`), replayed by the executor
RelayedMetrics = list[Any]


@dataclass(frozen=True)
class RunAttempt:
    """Run this attempt (the worker is idle)."""

    request: AttemptRequest


@dataclass(frozen=True)
class StopAttempt:
    """Stop the attempt of `ti_id`: SIGTERM follows (or has been sent)."""

    ti_id: int
    reason: str


@dataclass(frozen=True)
class Exit:
    """Finish what runs, then exit (a worker, or the template once its workers are gone)."""


@dataclass(frozen=True)
class Ready:
    """The worker is up and takes attempts."""


@dataclass(frozen=True)
class Started:
    """The attempt of `ti_id` runs in process `pid` (the worker's own, or one it forked)."""

    ti_id: int
    pid: int


@dataclass(frozen=True)
class Retiring:
    """The worker exits after the attempt of `ti_id`, for `reason`."""

    ti_id: int
    reason: str


@dataclass(frozen=True)
class Done:
    """The attempt of `ti_id` ended; `state` is None when none was recorded."""

    ti_id: int
    pid: int | None
    state: str | None
    error: str | None
    exit_code: int | None
    metrics: RelayedMetrics = field(default_factory=list)


@dataclass(frozen=True)
class SpawnWorker:
    """Fork a worker; its end of the socket pair follows as SCM_RIGHTS."""


@dataclass(frozen=True)
class Spawned:
    """The template forked the worker of the oldest unanswered `SpawnWorker`."""

    pid: int


@dataclass(frozen=True)
class Exited:
    """Worker `pid` exited with `exit_code`, and the template ended what it left."""

    pid: int
    exit_code: int
    ended: str | None  #: what the template had to kill, in words


@dataclass(frozen=True)
class Go:
    """The attempt process may start: its worker reported its pid."""


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as its attempt process reports it to its worker.

    `result` is the state it recorded (`str`) or, when the worker records the attempt,
    the runner's `Executed`; None when the attempt failed outside the task.
    """

    result: Any = None
    error: str | None = None
    metrics: RelayedMetrics = field(default_factory=list)


@dataclass(frozen=True)
class Relayed:
    """What a callback process's callbacks emitted, sent as it exits."""

    metrics: RelayedMetrics


@dataclass(frozen=True)
class Fork:
    """Fork a child that calls `target(*args)`; `args` refer to the descriptors sent with
    this message by their index (see `engine.execution.forkserver`)."""

    target: Any
    args: tuple
    name: str


@dataclass(frozen=True)
class Forked:
    """The fork server forked the child, `pid`."""

    pid: int


@dataclass(frozen=True)
class Reaped:
    """The child exited with `exit_code` (negative: killed by that signal)."""

    exit_code: int
