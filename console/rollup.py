"""The capacity rollup's writer: a background service of the scheduler (started through
the `dagwatch.plugins` services, never in its tick) that writes the buckets of the closed
minutes (`console.queries.capacity_rollup`) and prunes those older than
`console.capacity_retention`.

Each pass rewrites the last few minutes as well (an attempt's row may land a little after
its minute closed) and fills what is missing since the newest bucket, at most
`CHUNK_MINUTES` per statement, back to the retention on a fresh install. Writing a minute
again gives the same rows, so several schedulers may run it side by side.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from engine import hooks
from engine.store.db import Store
from engine.store.models import CapacityBucket, TaskTry

log = logging.getLogger(__name__)

#: seconds between two passes
INTERVAL = 60.0
#: closed minutes every pass writes again
REWRITE_MINUTES = 5
#: minutes computed from one read of the tries
CHUNK_MINUTES = 360


def catch_up(
    store: Store, now: datetime, parallelism: int, retention: float
) -> tuple[int, int]:  # fmt: skip
    """One pass: write the closed minutes not written yet (and the last `REWRITE_MINUTES`
    again), prune the old; returns (rows written, rows pruned). On a fresh rollup it
    starts at the retention (at the current minute if no task ever ran)."""
    from console.queries import capacity_rollup  # numpy and pandas: in the thread
    from console.queries.capacity_rollup import floor_minute

    closed = floor_minute(now)
    oldest = floor_minute(now - timedelta(seconds=retention))
    with store.session(readonly=True) as session:
        newest = session.execute(select(func.max(CapacityBucket.minute))).scalar_one()
        if newest is None:  # a fresh rollup: from the retention, if anything ran at all
            ran = session.execute(select(TaskTry.id).limit(1)).first()
            newest = oldest if ran else closed
            newest += timedelta(minutes=REWRITE_MINUTES - 1)
    first = max(oldest, newest - timedelta(minutes=REWRITE_MINUTES - 1))
    written = 0
    while first < closed:
        minutes = min(CHUNK_MINUTES, int((closed - first).total_seconds()) // 60)
        written += capacity_rollup.write(store, first, minutes, parallelism)
        first += timedelta(minutes=minutes)
    return written, capacity_rollup.prune(store, oldest)


def utcnow() -> datetime:
    return datetime.now(UTC)


class CapacityRollup:
    """The writer's thread: a pass every `interval` seconds until stopped."""

    name = "capacity-rollup"

    def __init__(
        self,
        config: Any,
        store: Store,
        *,
        registry: hooks.Registry | None = None,
        clock: Callable[[], datetime] = utcnow,
        interval: float = INTERVAL,
        first_wait: float = 5.0,
    ) -> None:
        self.store = store
        self.parallelism = int(config["core.parallelism"])
        self.retention = float(config["console.capacity_retention"])
        self.clock = clock
        self.interval = interval
        self.first_wait = first_wait
        self._registry = registry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.serve, args=(self._stop,), name="dagwatch-capacity-rollup", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def serve(self, stop: threading.Event) -> None:
        """A pass every `interval` (the first after `first_wait`) until `stop`; a failed pass
        is logged and tried again next time."""
        stop.wait(self.first_wait)
        while not stop.is_set() and self._owned():
            try:
                catch_up(self.store, self.clock(), self.parallelism, self.retention)
            except Exception as exc:  # the metastore is away, or another writer raced us
                log.error("capacity rollup pass failed: %s", exc)
            stop.wait(self.interval)

    def _owned(self) -> bool:
        return self._registry is None or hooks.current() is self._registry
