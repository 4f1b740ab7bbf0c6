"""Three slot histories whose right answers are known, written as the engine writes them
(a task instance per try, a task_try row per started attempt, task instances waiting for
a slot without a try), on one hour ending at `END`.

- POOL_FULL: pool `db` (2 slots) is full for exactly half the hour; a third task waits
  20 min for it (waits 0, 0, 1200 s: p95 1080 s).
- DELAYS: pool `api` (16 slots), 20 tries waiting 10, 20, ..., 200 s (p50 105 s, p95
  190.5 s) for no full limit, never more than one slot used.
- PARALLELISM: core.parallelism 4, held all hour by two tries in pool `a` and two in
  `b` (8 slots each); two tasks of each pool wait from the half hour on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from engine.store import pools
from engine.store.db import Store
from engine.store.models import DagRun, TaskInstance, TaskTry

END = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
START = END - timedelta(hours=1)


@dataclass(frozen=True)
class Try:
    """One attempt, in seconds from START (None: not yet); waiting: no slot yet."""

    task: str
    pool: str
    scheduled: float | None
    queued: float | None = None
    end: float | None = None
    slots: int = 1


def write(
    store: Store,
    pool_sizes: dict[str, int],
    tries: list[Try],
    *,
    start: datetime = START,
    scale: float = 1.0,
) -> None:
    """The pools, one run, and a task instance (with its try, once queued) per Try; its
    seconds are counted from `start`, multiplied by `scale`."""

    def _at(seconds: float | None) -> datetime | None:
        return None if seconds is None else start + timedelta(seconds=seconds * scale)

    with store.session() as session:
        for name, slots in pool_sizes.items():
            pools.set_pool(session, name, slots)
        session.add(
            DagRun(
                dag_id="cap",
                run_id="r1",
                run_type="manual",
                state="running",
                logical_date=start - timedelta(days=30),
                queued_at=start - timedelta(days=30),
                start_date=start - timedelta(days=30),
                conf={},
            )
        )
        session.flush()
        for t in tries:
            if t.queued is None:
                state = "scheduled"
            else:
                state = "running" if t.end is None else "success"
            ti = TaskInstance(
                dag_id="cap",
                run_id="r1",
                task_id=t.task,
                map_index=-1,
                state=state,
                try_number=0 if t.queued is None else 1,
                pool=t.pool,
                pool_slots=t.slots,
                scheduled_at=_at(t.scheduled),
                queued_at=_at(t.queued),
                start_date=_at(t.queued),
                end_date=_at(t.end),
            )
            session.add(ti)
            session.flush()
            if t.queued is not None:
                session.add(
                    TaskTry(
                        ti_id=ti.id,
                        dag_id="cap",
                        run_id="r1",
                        task_id=t.task,
                        map_index=-1,
                        try_number=1,
                        state=state,
                        start_date=_at(t.queued),
                        end_date=_at(t.end),
                        pool=t.pool,
                        pool_slots=t.slots,
                        scheduled_at=_at(t.scheduled),
                        queued_at=_at(t.queued),
                    )
                )


POOL_FULL = (
    {"db": 2},
    [
        Try("load_1", "db", 0, 0, 1800),
        Try("load_2", "db", 0, 0, 1800),
        Try("load_3", "db", 600, 1800, 2400),
        # ended before the window: not read
        Try("old", "db", -7200, -7200, -3600),
    ],
)
DELAYS = (
    {"api": 16},
    [Try(f"call_{i}", "api", 60 * i, 70 * i, 70 * i + 30) for i in range(1, 21)],
)
PARALLELISM = (
    {"a": 8, "b": 8},
    [
        Try("a_run_1", "a", -900, -600),
        Try("a_run_2", "a", -900, -600),
        Try("b_run_1", "b", -900, -600),
        Try("b_run_2", "b", -900, -600),
        Try("a_wait_1", "a", 1800),
        Try("a_wait_2", "a", 1800),
        Try("b_wait_1", "b", 1800),
        Try("b_wait_2", "b", 1800),
    ],
)
