"""The capacity rollup: per closed minute and per limit (each pool, and the executor), the
capacity page's per-second figures summed or maxed over the minute (`capacity_bucket`).

A minute's bucket is computed from the tries overlapping it (the same read and the same
per-second arithmetic as `console.queries.capacity`), and written by deleting and
re-inserting the minutes it covers, so writing it again gives the same rows. Added over
the minutes of a minute-aligned window, the buckets give the window's time full, peaks,
task-seconds waited (while full, and while only the executor was full) and the number of
tries exactly as the raw computation counts them; the wait percentiles and the longest
waits are not in a bucket.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import delete, func, insert, select

from console.advice import EXECUTOR
from console.queries.capacity import _arrays, _Tries, intervals, level, limit_levels
from engine.store import scheduling
from engine.store.db import Store
from engine.store.models import CapacityBucket

MINUTE = 60
#: the columns of a bucket, in CapacityBucket's order after (limit_name, minute)
FIGURES = (
    "size",
    "seconds_full",
    "slot_seconds",
    "peak_used",
    "peak_demand",
    "waited",
    "waited_full",
    "waited_executor_only",
    "started",
    "held_at_start",
)


def floor_minute(at: datetime) -> datetime:
    """`at` rounded down to its minute."""
    return at.replace(second=0, microsecond=0)


def _overlap(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per [edges[k], edges[k+1]): the summed length of the intervals [start, end) inside
    it, exactly (no grid): the integral of the count of intervals up to each edge."""
    ends = np.maximum(ends, starts)
    s, e = np.sort(starts), np.sort(ends)
    cs = np.concatenate([[0.0], np.cumsum(s)])
    ce = np.concatenate([[0.0], np.cumsum(e)])
    ns = np.searchsorted(s, edges, side="left")
    ne = np.searchsorted(e, edges, side="left")
    upto = edges * ns - cs[ns] - (edges * ne - ce[ne])
    return np.diff(upto)


def _per_minute(values: np.ndarray, minutes: int, how: str) -> np.ndarray:
    shaped = values.reshape(minutes, MINUTE)
    return shaped.max(axis=1) if how == "max" else shaped.sum(axis=1)


@dataclass(frozen=True)
class _Levels:
    used: np.ndarray
    full: np.ndarray
    waiting: np.ndarray  #: tries waiting per second (whole seconds, as `seconds_in`)
    figures: dict[str, np.ndarray]


def _limit_levels(
    size: int, tries: _Tries, pick: np.ndarray | None, minutes: int, *, per_slot: bool
) -> _Levels:
    """One limit's levels per second over the range and its figures per minute."""
    cells = minutes * MINUTE
    lv = limit_levels(size, tries, pick, cells, per_slot=per_slot)
    holds, ends, held = lv.holds, lv.ends, lv.held
    used, demand, full, w_starts, w_ends = lv.used, lv.demand, lv.full, lv.w_starts, lv.w_ends
    waiting = level(np.floor(w_starts), np.floor(w_ends), np.ones(len(w_starts)), cells)
    edges = np.arange(minutes + 1, dtype=float) * MINUTE
    in_window = held & (ends > 0)
    bucket_of = np.floor(holds[in_window] / MINUTE)
    started = np.bincount(
        bucket_of[(bucket_of >= 0) & (bucket_of < minutes)].astype(np.int64), minlength=minutes
    )
    h = np.sort(holds[held])
    e = np.sort(np.maximum(ends[held], holds[held]))
    # holding at b: began before b and not ended by b
    held_at = np.searchsorted(h, edges[:-1], "left") - np.searchsorted(e, edges[:-1], "right")
    figures = {
        "size": np.full(minutes, size),
        "seconds_full": _per_minute(full.astype(np.int64), minutes, "sum"),
        "slot_seconds": _per_minute(used, minutes, "sum"),
        "peak_used": _per_minute(used, minutes, "max"),
        "peak_demand": _per_minute(demand, minutes, "max"),
        "waited": _overlap(w_starts, np.maximum(w_ends, w_starts), edges),
        "waited_full": _per_minute(waiting * full, minutes, "sum"),
        "waited_executor_only": np.zeros(minutes),
        "started": started,
        "held_at_start": held_at,
    }
    return _Levels(used, full, waiting, figures)


def compute(
    store: Store, first: datetime, minutes: int, sizes: Mapping[str, int], parallelism: int
) -> list[dict[str, object]]:
    """The buckets of the `minutes` closed minutes from `first` (a whole minute), per limit."""
    end = first + timedelta(minutes=minutes)
    rows = intervals(store, first, end)
    tries = _arrays(rows, float(minutes * MINUTE))
    executor = _limit_levels(parallelism, tries, None, minutes, per_slot=False)
    limits = {EXECUTOR: executor}
    only_executor = np.zeros(minutes)
    for name in sorted(set(sizes) | set(tries.pools)):
        code = tries.pools.index(name) if name in tries.pools else -1
        pick = tries.pool == code
        pool = _limit_levels(int(sizes.get(name, 0)), tries, pick, minutes, per_slot=True)
        limits[name] = pool
        mask = executor.full & ~pool.full
        # the pool's waits, counted per whole second as the raw figure counts them
        only_executor += _per_minute(pool.waiting * mask, minutes, "sum")
    executor.figures["waited_executor_only"] = only_executor
    found = []
    for name, levels in limits.items():
        for k in range(minutes):
            row: dict[str, object] = {
                "limit_name": name,
                "minute": first + timedelta(minutes=k),
            }
            for column in FIGURES:
                value = levels.figures[column][k]
                row[column] = int(value) if column in ("size", "seconds_full", "started",
                    "held_at_start") else float(value)  # fmt: skip
            found.append(row)
    return found


def write(
    store: Store, first: datetime, minutes: int, parallelism: int
) -> int:  # fmt: skip
    """Compute and (re)write the buckets of `minutes` closed minutes from `first`: the
    minutes' rows are deleted and inserted again in one transaction. Returns rows written."""
    first = floor_minute(first)
    with store.session(readonly=True) as session:
        sizes = scheduling.pool_sizes(session)
    rows = compute(store, first, minutes, sizes, parallelism)
    end = first + timedelta(minutes=minutes)
    with store.session() as session:
        session.execute(
            delete(CapacityBucket).where(
                CapacityBucket.minute >= first, CapacityBucket.minute < end
            )
        )
        if rows:
            session.execute(insert(CapacityBucket), rows)
    return len(rows)


def prune(store: Store, before: datetime) -> int:
    """Delete the buckets of minutes before `before`; returns how many."""
    with store.session() as session:
        result = session.execute(delete(CapacityBucket).where(CapacityBucket.minute < before))
        return int(result.rowcount or 0)


def covered(store: Store, start: datetime, end: datetime) -> bool:
    """Whether every minute of [start, end) (whole minutes) has its executor bucket."""
    minutes = int((end - start).total_seconds()) // MINUTE
    with store.session(readonly=True) as session:
        count = session.execute(
            select(func.count()).where(
                CapacityBucket.limit_name == EXECUTOR,
                CapacityBucket.minute >= start,
                CapacityBucket.minute < end,
            )
        ).scalar_one()
    return int(count) == minutes


@dataclass(frozen=True)
class Rolled:
    """A limit's figures over whole minutes, added up from its buckets."""

    name: str
    size: int
    seconds: int
    seconds_full: int
    slot_seconds: float
    peak_used: float
    peak_demand: float
    waited: float
    waited_full: float
    waited_executor_only: float
    tries: int


def rolled(store: Store, start: datetime, end: datetime) -> dict[str, Rolled]:
    """Per limit, its buckets of [start, end) (whole minutes) added up in the database:
    one grouped statement on the primary key's range."""
    b = CapacityBucket
    with store.session(readonly=True) as session:
        found = session.execute(
            select(
                b.limit_name,
                func.max(b.size),
                func.count(),
                func.sum(b.seconds_full),
                func.sum(b.slot_seconds),
                func.max(b.peak_used),
                func.max(b.peak_demand),
                func.sum(b.waited),
                func.sum(b.waited_full),
                func.sum(b.waited_executor_only),
                func.sum(b.started),
            )
            .where(b.minute >= start, b.minute < end)
            .group_by(b.limit_name)
        ).all()
        first = dict(
            session.execute(select(b.limit_name, b.held_at_start).where(b.minute == start)).all()
        )
    return {
        row[0]: Rolled(
            name=row[0],
            size=int(row[1]),
            seconds=int(row[2]) * MINUTE,
            seconds_full=int(row[3]),
            slot_seconds=float(row[4]),
            peak_used=float(row[5]),
            peak_demand=float(row[6]),
            waited=float(row[7]),
            waited_full=float(row[8]),
            waited_executor_only=float(row[9]),
            tries=int(row[10]) + int(first.get(row[0], 0)),
        )
        for row in found
    }
