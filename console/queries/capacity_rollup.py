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
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Integer, cast, delete, func, insert, literal, select

from console.advice import EXECUTOR, LimitFigures, advise
from console.queries.capacity import (
    BUCKETS,
    LONGEST,
    WINDOWS,
    Capacity,
    _arrays,
    _since,
    _Tries,
    intervals,
    level,
    limit_levels,
)
from console.queries.common import utcnow
from engine.store import coordination, scheduling
from engine.store.db import Store, affected_rows
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
    """Sums or maxima of a per-second series by minute (the last one may be partial)."""
    padded = np.zeros(minutes * MINUTE, dtype=values.dtype)
    padded[: len(values)] = values
    shaped = padded.reshape(minutes, MINUTE)
    return shaped.max(axis=1) if how == "max" else shaped.sum(axis=1)


@dataclass(frozen=True)
class _Levels:
    used: np.ndarray
    full: np.ndarray
    waiting: np.ndarray  #: tries waiting per second (whole seconds, as `seconds_in`)
    figures: dict[str, np.ndarray]
    #: per minute, the waits of the tries that got their slot in it (those of the limit)
    waits: list[str]


def _texts(minute: np.ndarray, values: list[str], minutes: int) -> list[str]:
    """Per minute, its `values` joined by commas (`minute`: each value's minute)."""
    found: list[list[str]] = [[] for _ in range(minutes)]
    for k, value in zip(minute.tolist(), values, strict=True):
        found[k].append(value)
    return [",".join(part) for part in found]


def _limit_levels(
    size: int, tries: _Tries, pick: np.ndarray | None, cells: int, *, per_slot: bool
) -> _Levels:
    """One limit's levels per second over the range and its figures per minute."""
    minutes = -(-cells // MINUTE)
    lv = limit_levels(size, tries, pick, cells, per_slot=per_slot)
    holds, ends, held = lv.holds, lv.ends, lv.held
    used, demand, full, w_starts, w_ends = lv.used, lv.demand, lv.full, lv.w_starts, lv.w_ends
    waiting = level(np.floor(w_starts), np.floor(w_ends), np.ones(len(w_starts)), cells)
    edges = np.minimum(np.arange(minutes + 1, dtype=float) * MINUTE, cells)
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
    got = held & lv.asked & (holds >= 0) & (holds < cells)
    delays = np.round(holds[got] - lv.waits[got], 3)
    minute = np.floor(holds[got] / MINUTE).astype(np.int64)
    waits = _texts(minute, [f"{d:.3f}".rstrip("0").rstrip(".") for d in delays], minutes)
    return _Levels(used, full, waiting, figures, waits)


def compute(
    store: Store, first: datetime, seconds: int, sizes: Mapping[str, int], parallelism: int
) -> list[dict[str, object]]:
    """The buckets of the `seconds` from `first` (a whole minute; the last minute may be
    partial: the open one, computed for the page and not written), per limit. The
    executor's bucket also holds the `LONGEST` waits of tries that got a slot in it."""
    rows = intervals(store, first, first + timedelta(seconds=seconds), waited=True)
    return compute_rows(rows, first, seconds, sizes, parallelism)


def compute_rows(
    rows: pd.DataFrame, first: datetime, seconds: int, sizes: Mapping[str, int], parallelism: int
) -> list[dict[str, object]]:
    """`compute` on rows already read by `intervals(store, first, first + seconds)`."""
    minutes = -(-seconds // MINUTE)
    tries = _arrays(rows, float(seconds))
    executor = _limit_levels(parallelism, tries, None, seconds, per_slot=False)
    limits = {EXECUTOR: executor}
    only_executor = np.zeros(minutes)
    for name in sorted(set(sizes) | set(tries.pools)):
        code = tries.pools.index(name) if name in tries.pools else -1
        pick = tries.pool == code
        pool = _limit_levels(int(sizes.get(name, 0)), tries, pick, seconds, per_slot=True)
        limits[name] = pool
        mask = executor.full & ~pool.full
        # the pool's waits, counted per whole second as the raw figure counts them
        only_executor += _per_minute(pool.waiting * mask, minutes, "sum")
    executor.figures["waited_executor_only"] = only_executor
    longest = _longest_per_minute(rows, tries, seconds, minutes)
    stamps = [first + timedelta(minutes=k) for k in range(minutes)]
    keys = ("limit_name", "minute", *FIGURES, "waits", "longest")
    found: list[dict[str, object]] = []
    for name, levels in limits.items():
        # a column at a time: whole arrays to Python ints and floats, not value by value
        columns = [
            np.asarray(levels.figures[column])
            .astype(np.int64 if column in INTEGERS else np.float64)
            .tolist()
            for column in FIGURES
        ]
        found += (
            dict(zip(keys, values, strict=True))
            for values in zip(
                [name] * minutes,
                stamps,
                *columns,
                levels.waits,
                longest if name == EXECUTOR else [""] * minutes,
                strict=True,
            )
        )
    return found


INTEGERS = ("size", "seconds_full", "started", "held_at_start")


def _longest_per_minute(rows: pd.DataFrame, tries: _Tries, seconds: int, minutes: int) -> list[str]:
    """Per minute, the `LONGEST` tries that got their slot in it and waited longest, as
    "source:id:seconds" joined by commas."""
    held = ~np.isnan(tries.holds) & ~np.isnan(tries.waits)
    held &= (tries.holds >= 0) & (tries.holds < seconds)
    waited = np.where(held, tries.holds - tries.waits, -1.0)
    minute = np.floor(np.where(held, tries.holds, 0) / MINUTE).astype(np.int64)
    source, ids = rows["source"].to_numpy(), rows["id"].to_numpy()
    pick = np.flatnonzero(held & (waited > 0))
    # by minute, then longest first, ties in row order (np.lexsort is stable)
    pick = pick[np.lexsort((-waited[pick], minute[pick]))]
    bounds = np.searchsorted(minute[pick], np.arange(minutes + 1), side="left")
    found = []
    for k in range(minutes):
        top = pick[bounds[k] : min(bounds[k + 1], bounds[k] + LONGEST)]
        found.append(",".join(f"{source[i]}:{ids[i]}:{waited[i]:.3f}" for i in top))
    return found


def write(
    store: Store, first: datetime, minutes: int, parallelism: int
) -> int:  # fmt: skip
    """Compute and (re)write the buckets of `minutes` closed minutes from `first`: the
    minutes' rows are deleted and inserted again in one transaction, under an advisory
    lock on PostgreSQL so two schedulers rewriting the same minutes take turns (each
    would otherwise miss the other's uncommitted rows and insert them again). Returns
    rows written."""
    first = floor_minute(first)
    with store.session(readonly=True) as session:
        sizes = scheduling.pool_sizes(session)
    rows = compute(store, first, minutes * MINUTE, sizes, parallelism)
    return _replace(store, first, first + timedelta(minutes=minutes), rows)


def write_idle(
    store: Store, first: datetime, minutes: int, parallelism: int
) -> int:  # fmt: skip
    """`write` for `minutes` closed minutes from `first` that no try overlaps (before the
    first try of a fresh rollup): the first minute is computed, the others are copies of
    it, as their computation would give. Returns rows written."""
    first = floor_minute(first)
    with store.session(readonly=True) as session:
        sizes = scheduling.pool_sizes(session)
    template = compute(store, first, MINUTE, sizes, parallelism)
    rows = [
        {**row, "minute": first + timedelta(minutes=k)} for k in range(minutes) for row in template
    ]
    return _replace(store, first, first + timedelta(minutes=minutes), rows)


def _replace(
    store: Store, first: datetime, end: datetime, rows: list[dict[str, object]]
) -> int:  # fmt: skip
    """Delete the buckets of [first, end) and insert `rows` in their place."""
    with store.session() as session:
        coordination.lock(session, coordination.CAPACITY_ROLLUP_LOCK)
        session.execute(
            delete(CapacityBucket).where(
                CapacityBucket.minute >= first, CapacityBucket.minute < end
            )
        )
        if rows:
            # the table's insert: one executemany, no ORM bookkeeping per row
            session.execute(insert(CapacityBucket.__table__), rows)
    return len(rows)


def prune(store: Store, before: datetime) -> int:
    """Delete the buckets of minutes before `before`; returns how many."""
    with store.session() as session:
        result = session.execute(delete(CapacityBucket).where(CapacityBucket.minute < before))
        return affected_rows(result)


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


# -- the page's window from the buckets ------------------------------------------------


def report(
    store: Store, window: str, parallelism: int, *, now: datetime | None = None
) -> Capacity | None:
    """The capacity page's window from the buckets of its closed minutes and a live
    computation of the open one, or None when a minute of it has no bucket yet (the page
    then computes it from the tries). The window starts on a whole minute: it is the
    window's length plus the seconds of the open minute."""
    end = utcnow(now).replace(microsecond=0)
    closed = floor_minute(end)
    start = closed - WINDOWS[window]
    if not covered(store, start, closed):
        return None
    with store.session(readonly=True) as session:
        sizes = scheduling.pool_sizes(session)
    summed = rolled(store, start, closed)
    tail_seconds = int((end - closed).total_seconds())
    rows = intervals(store, closed, end)
    tail = {
        str(b["limit_name"]): b
        for b in (
            compute_rows(rows, closed, tail_seconds, sizes, parallelism) if tail_seconds else []
        )
    }
    waits, longest = _waits_and_longest(store, start, closed)
    cells = int((end - start).total_seconds())
    figures = []
    for name in [EXECUTOR, *sorted((set(sizes) | set(summed) | set(tail)) - {EXECUTOR})]:
        size = parallelism if name == EXECUTOR else int(sizes.get(name, 0))
        figures.append(_combined(name, size, summed.get(name), tail.get(name), waits, cells))
    pools = sorted(figures[1:], key=lambda f: (-f.full_share, -f.waited_on_it, f.name))
    figures = [figures[0], *pools]
    if EXECUTOR in tail:
        longest += _parsed(str(tail[EXECUTOR]["longest"]))
    longest += _still_waiting(rows, tail_seconds)
    return Capacity(
        window=window,
        start=start,
        end=end,
        figures=figures,
        chart=_chart(store, start, end, figures, tail),
        longest=_top(longest),
        advice=advise(figures, window),
    )


def _combined(
    name: str,
    size: int,
    summed: Rolled | None,
    tail: Mapping[str, Any] | None,
    waits: Mapping[str, list[str]],
    cells: int,
) -> LimitFigures:
    """A limit's window figures: its buckets' sums, the open minute's added."""
    t: Mapping[str, Any] = tail or {column: 0 for column in (*FIGURES, "waits")}
    r = summed
    texts = [*waits.get(name, []), str(t["waits"] or "")]
    joined = ",".join(text for text in texts if text)
    delays = np.array(joined.split(","), dtype=float) if joined else np.zeros(0)
    on_it = "waited_executor_only" if name == EXECUTOR else "waited_full"
    return LimitFigures(
        name=name,
        size=size,
        full_share=((r.seconds_full if r else 0) + int(t["seconds_full"])) / cells
        if cells
        else 0.0,
        peak_used=max(r.peak_used if r else 0.0, float(t["peak_used"])),
        peak_demand=max(r.peak_demand if r else 0.0, float(t["peak_demand"])),
        wait_p50=float(np.percentile(delays, 50)) if len(delays) else None,
        wait_p95=float(np.percentile(delays, 95)) if len(delays) else None,
        waited=(r.waited if r else 0.0) + float(t["waited"]),
        waited_on_it=(getattr(r, on_it) if r else 0.0) + float(t[on_it]),
        tries=(r.tries if r else 0) + int(t["started"]),
    )


def _waits_and_longest(
    store: Store, start: datetime, end: datetime
) -> tuple[dict[str, list[str]], list[tuple[int, int, float, bool]]]:
    """The buckets' waits per limit and their longest waits, over [start, end)."""
    b = CapacityBucket
    waits: dict[str, list[str]] = {}
    longest: list[tuple[int, int, float, bool]] = []
    with store.session(readonly=True) as session:
        for name, text, top in session.execute(
            select(b.limit_name, b.waits, b.longest).where(
                b.minute >= start, b.minute < end, (b.waits != "") | (b.longest != "")
            )
        ):
            if text:
                waits.setdefault(name, []).append(text)
            if top:
                longest += _parsed(top)
    return waits, longest


def _parsed(text: str) -> list[tuple[int, int, float, bool]]:
    found = []
    for item in text.split(",") if text else []:
        source, ident, waited = item.split(":")
        found.append((int(source), int(ident), float(waited), False))
    return found


def _still_waiting(rows: pd.DataFrame, seconds: int) -> list[tuple[int, int, float, bool]]:
    """The task instances still waiting for a slot, and how long they have waited."""
    tries = _arrays(rows, float(seconds))
    pick = np.flatnonzero(np.isnan(tries.holds) & ~np.isnan(tries.waits))
    source, ids = rows["source"].to_numpy(), rows["id"].to_numpy()
    return [
        (int(source[i]), int(ids[i]), float(seconds - tries.waits[i]), True)
        for i in pick
        if seconds - tries.waits[i] > 0
    ]


def _top(found: list[tuple[int, int, float, bool]]) -> pd.DataFrame:
    top = sorted(found, key=lambda item: -item[2])[:LONGEST]
    return pd.DataFrame(
        {
            "source": [t[0] for t in top],
            "id": [t[1] for t in top],
            "waited_s": [round(t[2], 1) for t in top],
            "still_waiting": [t[3] for t in top],
        }
    )


def _chart(
    store: Store,
    start: datetime,
    end: datetime,
    figures: list[LimitFigures],
    tail: Mapping[str, Mapping[str, Any]],
) -> pd.DataFrame:
    """Per limit and per 1/BUCKETS of the window (whole minutes), the most slots used and
    wanted and the limit, grouped by the database."""
    b = CapacityBucket
    group = max(1, (int((end - start).total_seconds()) // MINUTE) // BUCKETS)
    offset = _since(b.minute, start, store.engine.dialect.name) / literal(60.0 * group)
    index = (
        func.floor(offset + literal(1e-6))
        if store.engine.dialect.name != "sqlite"
        else cast(offset + literal(1e-6), Integer)
    ).label("k")
    with store.session(readonly=True) as session:
        found = session.execute(
            select(b.limit_name, index, func.max(b.peak_used), func.max(b.peak_demand))
            .where(b.minute >= start, b.minute < floor_minute(end))
            .group_by(b.limit_name, index)
        ).all()
    peaks: dict[tuple[str, int], list[float]] = {
        (name, int(k)): [float(used), float(wanted)] for name, k, used, wanted in found
    }
    last = int((floor_minute(end) - start).total_seconds()) // (MINUTE * group)
    for name, bucket in tail.items():
        got = peaks.setdefault((name, last), [0.0, 0.0])
        got[0] = max(got[0], float(bucket["peak_used"]))
        got[1] = max(got[1], float(bucket["peak_demand"]))
    sizes = {f.name: f.size for f in figures}
    rows = []
    for (name, k), (used, wanted) in sorted(peaks.items()):
        if name not in sizes:
            continue
        at = start + timedelta(minutes=k * group)
        rows += [(name, at, "used", used), (name, at, "wanted", wanted)]
        rows.append((name, at, "limit", float(sizes[name])))
    chart = pd.DataFrame(rows, columns=["limit", "at", "series", "slots"])
    chart["at"] = pd.to_datetime(chart["at"], utc=True)
    return chart
