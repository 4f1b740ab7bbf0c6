"""Celery workers and queues for the pools and capacity page: slots per worker and queue,
and per queue the backlog (queued attempts, sent and not started) and how long its oldest
one has waited. Two bounded reads: the live workers' heartbeat rows (index on state and
heartbeat) and one grouped count of queued task instances (index on state)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd

from console.queries.common import frame, utcnow
from engine.store import workers
from engine.store.db import Store

WORKER_COLUMNS = (
    "worker",
    "hostname",
    "queue",
    "slots",
    "running",
    "open",
    "heartbeat_age_s",
)
QUEUE_COLUMNS = ("queue", "workers", "slots", "running", "open", "backlog", "oldest_wait_s")
#: the most worker rows shown (a fleet larger than this is summed per queue anyway)
MAX_WORKERS = 200


def worker_slots(
    store: Store, *, heartbeat_timeout: float, now: datetime | None = None
) -> pd.DataFrame:
    """One row per (live worker, queue it consumes): its slots, running and open ones.
    A worker's free slots are shared by its queues, so they show under each."""
    now = utcnow(now)
    with store.session(readonly=True) as session:
        rows = workers.live_workers(session, now - timedelta(seconds=heartbeat_timeout))
    out = []
    for row in rows[:MAX_WORKERS]:
        running = {str(k): int(v) for k, v in (row.running or {}).items()}
        free = max(0, row.concurrency - sum(running.values()))
        age = round((now - row.latest_heartbeat).total_seconds(), 1)
        for queue in [q for q in row.queues.split(",") if q]:
            out.append(
                (row.name, row.hostname, queue, row.concurrency, running.get(queue, 0), free, age)
            )
    return frame(out, WORKER_COLUMNS)


def queue_capacity(
    store: Store, *, heartbeat_timeout: float, now: datetime | None = None
) -> pd.DataFrame:
    """One row per queue that has a live worker or a queued attempt: workers, slots,
    running, open, backlog and the oldest queued attempt's wait (seconds). A queue with a
    backlog and no worker is what a page on call should see first, so it sorts first."""
    from engine.observability.workers import slots_by_queue

    now = utcnow(now)
    with store.session(readonly=True) as session:
        live = workers.live_workers(session, now - timedelta(seconds=heartbeat_timeout))
        backlog = workers.queued_by_queue(session)
    slots = slots_by_queue(live)
    out = []
    for queue in sorted(set(slots) | set(backlog)):
        entry = slots.get(queue, {"workers": 0, "slots": 0, "running": 0, "open": 0})
        count, oldest = backlog.get(queue, (0, None))
        wait = round((now - oldest).total_seconds(), 1) if oldest is not None else None
        out.append(
            (queue, entry["workers"], entry["slots"], entry["running"], entry["open"], count, wait)
        )
    out.sort(key=lambda r: (r[1] > 0, -(r[5] or 0), r[0]))
    return frame(out, QUEUE_COLUMNS)
