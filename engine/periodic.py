"""A background service of the scheduler (`engine.hooks.Service`) that runs one pass every
`interval` seconds in its own thread, never in the tick: a failed pass is logged and tried
again next time. A pass reads the time from `clock` (the scheduler's); the wait between
passes is a real sleep. `registry` ties the thread to the plugin installation that made it: once
that is replaced (`engine.runtime.reset`), the thread stops by itself."""

from __future__ import annotations

import logging
import threading

from engine import hooks
from engine.clock import SYSTEM, Clock

log = logging.getLogger(__name__)


class PeriodicService:
    """Subclasses set `name` and `thread_name` and define `run_pass`."""

    name = "periodic"
    thread_name = "dagwatch-periodic"

    def __init__(
        self,
        *,
        interval: float,
        first_wait: float,
        registry: hooks.Registry | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.first_wait = first_wait
        self._registry = registry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_pass(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.serve, args=(self._stop,), name=self.thread_name, daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def serve(self, stop: threading.Event) -> None:
        """A pass every `interval` (the first after `first_wait`) until `stop`."""
        stop.wait(self.first_wait)
        while not stop.is_set() and self._owned():
            try:
                self.run_pass()
            except Exception as exc:  # the metastore is away: try again next time
                log.error("%s pass failed: %s", self.name, exc)
            stop.wait(self.interval)

    def _owned(self) -> bool:
        return self._registry is None or hooks.current() is self._registry
