"""The sequential executor: each attempt runs inside `queue()`, in the caller's process.

For tests and debugging only: an attempt blocks the scheduler loop for as long as it
runs, user code shares the scheduler's process (a crash or `os._exit` in a task takes
the scheduler down with it), and `terminate` cannot interrupt anything.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from engine.config import Config
from engine.execution.attempt import DagCache, extend_sys_path, run_callback_request, run_here
from engine.execution.base import AttemptEvent, AttemptRequest, CallbackRequest
from engine.store.db import Store

log = logging.getLogger(__name__)


class SequentialExecutor:
    """One attempt at a time, synchronously, with DAG files imported once per version."""

    name = "sequential"
    parallelism = 1

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self._dags = DagCache()
        self._events: list[AttemptEvent] = []

    def start(self) -> None:
        extend_sys_path(self.config)

    def queue(self, requests: Sequence[AttemptRequest]) -> None:
        for request in requests:
            self._events.append(self._run(request))

    def _run(self, request: AttemptRequest) -> AttemptEvent:
        # an attempt that failed outside the task is reported as lost (state None)
        ran = run_here(self.store, self.config, request, self._dags.load)
        return AttemptEvent(
            ti_id=request.ti_id,
            dag_id=request.dag_id,
            run_id=request.run_id,
            task_id=request.task_id,
            state=ran.state,
            exit_code=None,
            error=ran.error,
        )

    def queue_callbacks(self, requests: Sequence[CallbackRequest]) -> None:
        for request in requests:
            try:
                run_callback_request(self.store, self.config, request, self._dags)
            except Exception:
                log.exception(
                    "running %s of %s/%s failed", request.kind, request.dag_id, request.run_id
                )

    def wait(self, timeout: float) -> bool:
        """Returns at once: every attempt already ended inside `queue()`."""
        return bool(self._events)

    def collect(self) -> list[AttemptEvent]:
        events, self._events = self._events, []
        return events

    def running_ti_ids(self) -> set[int]:
        return set()

    def terminate(self, ti_ids: Sequence[int], reason: str) -> None:
        """Nothing to stop: no attempt is running between calls."""

    @property
    def open_slots(self) -> int:
        return 1

    def end(self, grace: float) -> None:
        """Nothing is running between calls."""
