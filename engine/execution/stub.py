"""A test double: holds queued attempts without running them, so a test decides when
(and how) each one ends. It lets scheduler tests drive `tick(now)` with a fake clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.execution.base import AttemptEvent, AttemptRequest, CallbackRequest
from engine.states import TaskState


class StubExecutor:
    """Records requests; `finish()` turns one into an event, as a worker would."""

    name = "stub"

    def __init__(self, parallelism: int = 32) -> None:
        self.parallelism = parallelism
        self.held: dict[int, AttemptRequest] = {}
        self.history: list[AttemptRequest] = []
        self.callbacks: list[CallbackRequest] = []
        self.terminated: list[tuple[int, str]] = []
        self._events: list[AttemptEvent] = []
        self.ended = False

    def start(self) -> None:
        """Nothing to start."""

    def queue(self, requests: Sequence[AttemptRequest]) -> None:
        for request in requests:
            self.held[request.ti_id] = request
            self.history.append(request)

    def queue_callbacks(self, requests: Sequence[CallbackRequest]) -> None:
        self.callbacks.extend(requests)

    def finish(
        self, ti_id: int, state: TaskState | None, exit_code: int | None = 0, pid: int | None = None
    ) -> None:
        """Report the attempt ended (state None: the process died without recording)."""
        request = self.held.pop(ti_id)
        error = None if state is not None else f"attempt process exited with code {exit_code}"
        self._events.append(
            AttemptEvent(
                request.ti_id, request.dag_id, request.run_id, request.task_id, state, exit_code,
                error, pid,
            )
        )  # fmt: skip

    def wait(self, timeout: float) -> bool:
        return bool(self._events)

    def collect(self) -> list[AttemptEvent]:
        events, self._events = self._events, []
        return events

    def running_ti_ids(self) -> set[int]:
        return set(self.held)

    def terminate(self, ti_ids: Sequence[int], reason: str) -> None:
        self.terminated.extend((ti_id, reason) for ti_id in ti_ids)

    @property
    def open_slots(self) -> int:
        return max(0, self.parallelism - len(self.held))

    def end(self, grace: float) -> None:
        self.ended = True
