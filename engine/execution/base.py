"""The executor interface: queue attempts, learn when they end, report slots.

The scheduler moves a task instance to `queued` and hands the executor an
`AttemptRequest`; whatever runs the attempt calls `engine.execution.runner.run_attempt`, which
records running → outcome itself. The executor only reports that an attempt process
ended (`AttemptEvent`), so the scheduler can look at that run at once, and notices
attempts that died without recording an outcome (`lost`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from engine.states import TaskState


@dataclass(frozen=True)
class AttemptRequest:
    """Everything a worker needs to run one attempt without asking the scheduler."""

    ti_id: int
    dag_id: str
    run_id: str
    task_id: str
    fileloc: str  #: the DAG file the worker imports to find the task
    queue: str = "default"
    priority_weight: int = 1
    execution_timeout: float | None = None  #: seconds; a hard stop after a grace period
    #: the id of the message carrying it (Celery's task id), committed with the queued
    #: state; None for executors that carry attempts in their own process
    external_id: str | None = None


@dataclass(frozen=True)
class CallbackRequest:
    """Run DAG-level callbacks (or a task's failure callbacks for a zombie) in a worker."""

    dag_id: str
    run_id: str
    fileloc: str
    kind: str  #: on_success_callback | on_failure_callback | sla_miss_callback | ...
    task_id: str | None = None  #: set for task callbacks (zombies)
    reason: str | None = None
    map_index: int = -1  #: the instance of a mapped task, for task callbacks
    #: its row in callback_request, marked done once the callbacks ran (not part of what
    #: the request is: two requests for the same callbacks are equal)
    request_id: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AttemptEvent:
    """An attempt process ended."""

    ti_id: int
    dag_id: str
    run_id: str
    task_id: str
    #: the outcome the runner recorded; None when the process died before recording one
    state: TaskState | None
    exit_code: int | None
    error: str | None = None
    #: the attempt process; a lost event only fails a running task instance with this pid
    pid: int | None = None

    @property
    def lost(self) -> bool:
        return self.state is None


def external_ids(executor: Executor, ti_ids: Sequence[int]) -> dict[int, str]:
    """The message ids an executor gives these attempts before they are queued ({} for
    executors without messages): the scheduler commits them with the queued state."""
    assign = getattr(executor, "assign_external_ids", None)
    return assign(ti_ids) if assign is not None else {}


class Executor(Protocol):
    """What the scheduler needs from an executor."""

    name: str
    parallelism: int

    def start(self) -> None:
        """Start workers; called once before the first `queue`."""

    def queue(self, requests: Sequence[AttemptRequest]) -> None:
        """Start (or enqueue) these attempts; their task instances are already `queued`."""

    def queue_callbacks(self, requests: Sequence[CallbackRequest]) -> None:
        """Run callbacks out of the scheduler's process; they take no task slot."""

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds until an attempt ends; True if one did."""

    def collect(self) -> list[AttemptEvent]:
        """Events of attempts that ended since the last call."""

    def running_ti_ids(self) -> set[int]:
        """Task instances whose attempt this executor is running or holding."""

    def terminate(self, ti_ids: Sequence[int], reason: str) -> None:
        """Stop these attempts (SIGTERM, then SIGKILL); the runner records the failure."""

    @property
    def open_slots(self) -> int:
        """How many more attempts it can take now."""

    def end(self, grace: float) -> None:
        """Stop taking work; let running attempts finish for up to `grace` s, then stop them."""
