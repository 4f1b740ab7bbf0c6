"""The capacity rollup's writer: a background service of the scheduler (started through
the `dagwatch.plugins` services, never in its tick) that writes the buckets of the closed
minutes (`console.queries.capacity_rollup`) and prunes those older than
`console.capacity_retention`.

Each pass rewrites the last few minutes as well (an attempt's row may land a little after
its minute closed) and fills what is missing since the newest bucket, at most
`CHUNK_MINUTES` per statement, back to the retention on a fresh install. There, the
minutes before the first try are idle: one is computed and the others copied from it.
Writing a minute again gives the same rows, so several schedulers may run it side by side.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from engine import hooks
from engine.clock import SYSTEM, Clock
from engine.periodic import PeriodicService
from engine.store.db import Store
from engine.store.models import CapacityBucket, TaskTry

if TYPE_CHECKING:
    from engine.config import Config

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
    from console.queries import capacity, capacity_rollup  # numpy and pandas: in the thread
    from console.queries.capacity_rollup import floor_minute

    closed = floor_minute(now)
    oldest = floor_minute(now - timedelta(seconds=retention))
    idle_until = oldest
    with store.session(readonly=True) as session:
        newest = session.execute(select(func.max(CapacityBucket.minute))).scalar_one()
        if newest is None:  # a fresh rollup: from the retention, if anything ran at all
            ran = session.execute(select(TaskTry.id).limit(1)).first()
            newest = oldest if ran else closed
            newest += timedelta(minutes=REWRITE_MINUTES - 1)
            if ran:
                began = capacity.first_activity(session)
                idle_until = min(closed, max(oldest, floor_minute(began or oldest)))
    first = max(oldest, newest - timedelta(minutes=REWRITE_MINUTES - 1))
    written = 0
    if first < idle_until:
        minutes = int((idle_until - first).total_seconds()) // 60
        written += capacity_rollup.write_idle(store, first, minutes, parallelism)
        first = idle_until
    while first < closed:
        minutes = min(CHUNK_MINUTES, int((closed - first).total_seconds()) // 60)
        written += capacity_rollup.write(store, first, minutes, parallelism)
        first += timedelta(minutes=minutes)
    return written, capacity_rollup.prune(store, oldest)


class CapacityRollup(PeriodicService):
    """The writer's thread: a pass (`catch_up`) every `interval` seconds until stopped."""

    name = "capacity-rollup"
    thread_name = "dagwatch-capacity-rollup"

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        registry: hooks.Registry | None = None,
        clock: Clock = SYSTEM,
        interval: float = INTERVAL,
        first_wait: float = 5.0,
    ) -> None:
        super().__init__(interval=interval, first_wait=first_wait, registry=registry, clock=clock)
        self.store = store
        self.parallelism = int(config["core.parallelism"])
        self.retention = float(config["console.capacity_retention"])

    def run_pass(self) -> None:
        catch_up(self.store, self.clock.now(), self.parallelism, self.retention)
