"""Celery workers as a scrape-time source: slots per worker and queue, from the
heartbeat rows the workers write (`engine.store.workers`), so every scheduler's
`/metrics` shows every worker, on any machine."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from engine.observability.collector import Clock, utcnow
from engine.store import workers
from metrics import Sample

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.db import Store


def worker_samples(rows: Iterable[Any]) -> list[Sample]:
    """running and open slots per (worker, queue) of live worker rows, and their count."""
    samples: list[Sample] = []
    count = 0
    for row in rows:
        count += 1
        running = {str(k): int(v) for k, v in (row.running or {}).items()}
        free = max(0, row.concurrency - sum(running.values()))
        for queue in [q for q in row.queues.split(",") if q]:
            tags = {"worker": row.name, "queue": queue}
            samples.append(Sample("executor.worker.running_slots", running.get(queue, 0), tags))
            samples.append(Sample("executor.worker.open_slots", free, tags))
    samples.append(Sample("executor.workers", count))
    return samples


def workers_source(
    store: Store, config: Config, clock: Clock = utcnow
) -> Callable[[], list[Sample]]:
    """The source to add next to `metastore_source`: one indexed query per scrape."""
    timeout = timedelta(seconds=config["scheduler.heartbeat_timeout"])

    def read_workers() -> list[Sample]:
        with store.session(readonly=True) as session:
            rows = workers.live_workers(session, clock() - timeout)
            return worker_samples(rows)

    return read_workers


def with_workers(
    source: Callable[[], Iterable[Sample]], store: Store, config: Config
) -> Callable[[], list[Sample]]:
    """`source` followed by the workers' samples."""
    read_workers = workers_source(store, config)

    def read() -> list[Sample]:
        return [*source(), *read_workers()]

    return read


def workers_check(
    store: Store, config: Config, clock: Clock = utcnow
) -> Callable[[], tuple[bool, Any]]:
    """`/health` check of the celery executor: at least one live worker; detail: how many,
    and slots (total, running, open) per queue. A metastore error fails it, URL hidden."""
    from engine.observability.health import DB_ERRORS, error_detail

    timeout = timedelta(seconds=config["scheduler.heartbeat_timeout"])

    def check() -> tuple[bool, Any]:
        try:
            with store.session(readonly=True) as session:
                rows = workers.live_workers(session, clock() - timeout)
                queues = slots_by_queue(rows)
        except DB_ERRORS as exc:
            return False, error_detail(exc, store)
        detail = {"live_workers": len(rows), "queues": queues}
        if not rows:
            detail["error"] = f"no worker heartbeat in the last {timeout.total_seconds():g} s"
        return bool(rows), detail

    return check


def slots_by_queue(rows: Iterable[Any]) -> dict[str, dict[str, int]]:
    """{queue: {"workers", "slots", "running", "open"}} over live worker rows; a worker's
    free slots count under each queue it consumes."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        running = {str(k): int(v) for k, v in (row.running or {}).items()}
        free = max(0, row.concurrency - sum(running.values()))
        for queue in [q for q in row.queues.split(",") if q]:
            entry = out.setdefault(queue, {"workers": 0, "slots": 0, "running": 0, "open": 0})
            entry["workers"] += 1
            entry["slots"] += row.concurrency
            entry["running"] += running.get(queue, 0)
            entry["open"] += free
    return out
