"""Pools and the executor: slots now, and over a window the occupancy, the share of time
each was full, the waits for a slot and who waited longest, from the recorded tries.

One query reads the window (`intervals`): the tries that overlap it (index on
task_try.end_date; open tries are the running ones) and the task instances waiting for
a slot or queued now, which have no try yet. The rest is arithmetic on levels counted per
second of the window (`level`): a try holds `pool_slots` of its pool, and one executor
slot, from queued to end, and waits from scheduled to queued. Times are counted in whole
seconds from the window's start; waits and their percentiles use the exact times.

The pool sizes are today's (a pool resized during the window is judged by its new size).
A sensor in reschedule mode counts as holding its slot from its first poke to its end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import CompoundSelect, and_, func, literal, or_, select, union_all
from sqlalchemy.orm import Session

from console.advice import EXECUTOR, Advice, LimitFigures, advise
from console.queries.common import frame, utcnow
from engine.states import TaskState
from engine.store import pools as pool_store
from engine.store import scheduling
from engine.store.db import Store
from engine.store.models import TaskInstance, TaskTry, UtcDateTime

WINDOWS: dict[str, timedelta] = {
    "1 h": timedelta(hours=1),
    "24 h": timedelta(hours=24),
    "7 d": timedelta(days=7),
}
#: points of the occupancy chart per window
BUCKETS = 120
#: rows of "waited longest"
LONGEST = 20
#: seconds are counted from the window's start in SQL: no datetime object per row
INTERVAL_COLUMNS = ("source", "id", "pool", "slots", "scheduled", "queued", "end", "state")
TRY, WAITING = 0, 1  #: `source`: a try (task_try.id) or a waiting task instance (its id)
NOW_COLUMNS = ("limit", "slots", "running", "queued", "scheduled", "open")
_RUNNING = TaskState.RUNNING.value
_WAITING = (TaskState.SCHEDULED.value, TaskState.QUEUED.value)
_JULIAN_EPOCH = 2440587.5  #: the julian day of 1970-01-01


# -- the reads -------------------------------------------------------------------------


def intervals(
    store: Store, start: datetime, end: datetime, *, waited: bool = False
) -> pd.DataFrame:
    """Every try that held or waited for a slot during [start, end), and every task
    instance waiting or queued now, in one statement; times in seconds since `start`
    (milliseconds kept), `end` NaN while still going. `waited`: also the tries that got
    their slot after `end` but were waiting before it (a range in the past)."""
    statement = intervals_statement(start, end, store.engine.dialect.name, waited=waited)
    # Its only parameters are two times and constants of this module, rendered by their
    # types; run on the driver's cursor, it skips a row object per try (most of the time
    # of a window of a million tries went there).
    sql = str(statement.compile(store.engine, compile_kwargs={"literal_binds": True}))
    with store.session(readonly=True) as session:
        cursor = session.connection().connection.cursor()
        try:
            cursor.execute(sql)
            rows = cursor.fetchall()
        finally:
            cursor.close()
    found = pd.DataFrame.from_records(rows, columns=list(INTERVAL_COLUMNS), nrows=len(rows))
    for column in ("scheduled", "queued", "end"):
        found[column] = pd.to_numeric(found[column], errors="coerce").astype(float).round(3)
    return found


def _since(column: Any, start: datetime, dialect: str) -> Any:
    """Seconds from `start` to `column`, computed by the database."""
    if dialect == "sqlite":  # UtcDateTime is stored as UTC text, which julianday reads
        day = start.timestamp() / 86400 + _JULIAN_EPOCH
        return (func.julianday(column) - literal(day)) * literal(86400.0)
    return func.extract("epoch", column - literal(start, UtcDateTime()))


def intervals_statement(
    start: datetime, end: datetime, dialect: str, *, waited: bool = False
) -> CompoundSelect:
    """The statement of `intervals`: tries by ix_task_try_end_date, waiting task instances
    by ix_task_instance_state_pool."""
    held_from = func.coalesce(TaskTry.queued_at, TaskTry.start_date)
    tries = select(
        literal(TRY).label("source"),
        TaskTry.id,
        TaskTry.pool,
        TaskTry.pool_slots,
        _since(TaskTry.scheduled_at, start, dialect),
        _since(held_from, start, dialect),
        _since(TaskTry.end_date, start, dialect),
        TaskTry.state,
    ).where(
        or_(
            TaskTry.end_date >= start,
            and_(TaskTry.end_date.is_(None), TaskTry.state == _RUNNING),
        ),
        (func.coalesce(TaskTry.scheduled_at, held_from) if waited else held_from) < end,
    )
    waiting = select(
        literal(WAITING),
        TaskInstance.id,
        TaskInstance.pool,
        TaskInstance.pool_slots,
        _since(TaskInstance.scheduled_at, start, dialect),
        _since(TaskInstance.queued_at, start, dialect),
        literal(None),
        TaskInstance.state,
    ).where(TaskInstance.state.in_(_WAITING))
    return union_all(tries, waiting)


def first_activity(session: Session) -> datetime | None:
    """The earliest time any row `intervals` reads has (a try's scheduled, queued or start
    time, a waiting task instance's scheduled or queued time): no minute before it has
    anything to count. Read once, by a fresh capacity rollup."""
    tries = session.execute(
        select(
            func.min(TaskTry.scheduled_at),
            func.min(TaskTry.queued_at),
            func.min(TaskTry.start_date),
        )
    ).one()
    waiting = session.execute(
        select(func.min(TaskInstance.scheduled_at), func.min(TaskInstance.queued_at)).where(
            TaskInstance.state.in_(_WAITING)
        )
    ).one()
    times = [at for at in (*tries, *waiting) if at is not None]
    return min(times) if times else None


def now_slots(store: Store, parallelism: int) -> pd.DataFrame:
    """Slots running / queued / scheduled / open now, per pool and for the executor
    (whose slots are task instances, whatever their pool_slots)."""
    with store.session(readonly=True) as session:
        pools = pool_store.list_pools(session)
        counts = dict(
            session.execute(
                select(TaskInstance.state, func.count())
                .where(TaskInstance.state.in_((_RUNNING, *_WAITING)))
                .group_by(TaskInstance.state)
            ).all()
        )
    running, queued = counts.get(_RUNNING, 0), counts.get(TaskState.QUEUED.value, 0)
    rows = [
        (
            EXECUTOR,
            parallelism,
            running,
            queued,
            counts.get(TaskState.SCHEDULED.value, 0),
            max(0, parallelism - running - queued),
        )
    ]
    rows += [
        (p.name, p.slots, p.running_slots, p.queued_slots, p.scheduled_slots, p.open_slots)
        for p in pools
    ]
    return frame(rows, NOW_COLUMNS)


# -- levels on a one-second grid ------------------------------------------------------


def level(starts: np.ndarray, ends: np.ndarray, weights: np.ndarray, cells: int) -> np.ndarray:
    """Per second of the window (`cells` of them): the sum of `weights` of the intervals
    [start, end) (seconds from the window's start, clipped to it) covering that second."""
    first = np.clip(np.floor(starts), 0, cells).astype(np.int64)
    last = np.clip(np.floor(ends), 0, cells).astype(np.int64)
    keep = last > first
    delta = np.bincount(first[keep], weights[keep], minlength=cells + 1)
    delta -= np.bincount(last[keep], weights[keep], minlength=cells + 1)
    return np.round(np.cumsum(delta)[:cells], 9)


def seconds_in(mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per interval [start, end): how many of its seconds `mask` (one per second) holds."""
    cells = len(mask)
    cumulative = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
    first = np.clip(np.floor(starts), 0, cells).astype(np.int64)
    last = np.clip(np.floor(ends), 0, cells).astype(np.int64)
    return np.maximum(cumulative[last] - cumulative[first], 0).astype(float)


def peaks(values: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """(start second, maximum) of each of `buckets` equal parts of `values`."""
    edges = np.linspace(0, len(values), buckets + 1).astype(np.int64)[:-1]
    edges = np.unique(np.minimum(edges, max(len(values) - 1, 0)))
    if not len(values):
        return edges, np.zeros(len(edges))
    return edges, np.maximum.reduceat(values, edges)


# -- the analysis ----------------------------------------------------------------------


@dataclass
class Capacity:
    """A window's figures: per limit, its chart, the longest waits, the advice."""

    window: str
    start: datetime
    end: datetime
    figures: list[LimitFigures] = field(default_factory=list)
    chart: pd.DataFrame = field(default_factory=pd.DataFrame)
    longest: pd.DataFrame = field(default_factory=pd.DataFrame)
    advice: list[Advice] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """The figures as rows, the executor first, then the pools by time full."""
        rows = [
            (
                f.name,
                f.size,
                round(100 * f.full_share, 1),
                f.peak_used,
                f.peak_demand,
                _round(f.wait_p50),
                _round(f.wait_p95),
                round(f.waited, 1),
                round(f.waited_on_it, 1),
                f.tries,
            )
            for f in self.figures
        ]
        columns = (
            "limit",
            "slots",
            "full_%",
            "peak_used",
            "peak_demand",
            "wait_p50_s",
            "wait_p95_s",
            "waited_task_s",
            "waited_while_full_task_s",
            "tries",
        )
        return frame(rows, columns)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass(frozen=True)
class _Tries:
    """The window's intervals as arrays of seconds since the window's start."""

    pool: np.ndarray  #: an index into `pools`
    pools: list[str]
    slots: np.ndarray
    waits: np.ndarray  #: scheduled (NaN when unknown: no wait counted)
    holds: np.ndarray  #: queued (NaN: still waiting)
    ends: np.ndarray


def _arrays(rows: pd.DataFrame, now: float) -> _Tries:
    holds = rows["queued"].to_numpy(dtype=float, copy=True)
    holds[rows["state"].to_numpy() == TaskState.SCHEDULED.value] = np.nan
    ends = rows["end"].to_numpy(dtype=float, copy=True)
    ends[np.isnan(ends)] = now
    waits = rows["scheduled"].to_numpy(dtype=float, copy=True)
    waits = np.where(waits > holds, holds, waits)  # a clock step must not make waits negative
    codes, names = pd.factorize(rows["pool"].fillna("default_pool"))
    return _Tries(
        codes,
        [str(name) for name in names],
        rows["slots"].fillna(1).to_numpy(dtype=float),
        waits,
        holds,
        ends,
    )


@dataclass(frozen=True)
class Levels:
    """One limit's tries (`held`: has a slot, `asked`: its wait is known) and its levels
    per second: slots used and wanted, full or not; its waits clipped to the window."""

    holds: np.ndarray
    ends: np.ndarray
    waits: np.ndarray
    held: np.ndarray
    asked: np.ndarray
    used: np.ndarray
    demand: np.ndarray
    full: np.ndarray
    w_starts: np.ndarray
    w_ends: np.ndarray


def limit_levels(
    size: int, tries: _Tries, pick: np.ndarray | None, cells: int, *, per_slot: bool
) -> Levels:
    """The levels of one limit (the tries `pick`ed, or all) over `cells` seconds."""
    if pick is None:  # every try
        holds, ends, waits, slots = tries.holds, tries.ends, tries.waits, tries.slots
    else:
        holds, ends, waits = tries.holds[pick], tries.ends[pick], tries.waits[pick]
        slots = tries.slots[pick]
    weights = slots if per_slot else np.ones(len(holds))
    held, asked = ~np.isnan(holds), ~np.isnan(waits)
    used = level(holds[held], ends[held], weights[held], cells)
    wanted = asked | held
    demand = level(np.where(asked, waits, holds)[wanted], ends[wanted], weights[wanted], cells)
    w_starts = np.clip(waits[asked], 0, cells)
    w_ends = np.clip(np.where(held, holds, ends)[asked], 0, cells)
    return Levels(holds, ends, waits, held, asked, used, demand, used >= size, w_starts, w_ends)


def _limit(
    name: str, size: int, tries: _Tries, pick: np.ndarray | None, cells: int, *, per_slot: bool
) -> tuple[LimitFigures, np.ndarray, np.ndarray]:
    """The figures of one limit over the window, its occupancy and its demand per second.
    A pool counts pool_slots (`per_slot`); the executor counts tries. `waited_on_it` is
    the wait while this limit was full."""
    lv = limit_levels(size, tries, pick, cells, per_slot=per_slot)
    holds, ends, waits, held, asked = lv.holds, lv.ends, lv.waits, lv.held, lv.asked
    used, demand, full, w_starts, w_ends = lv.used, lv.demand, lv.full, lv.w_starts, lv.w_ends
    got = held & asked & (holds >= 0) & (holds < cells)
    delays = holds[got] - waits[got]
    figures = LimitFigures(
        name=name,
        size=size,
        full_share=float(full.mean()) if cells else 0.0,
        peak_used=float(used.max(initial=0.0)),
        peak_demand=float(demand.max(initial=0.0)),
        wait_p50=float(np.percentile(delays, 50)) if len(delays) else None,
        wait_p95=float(np.percentile(delays, 95)) if len(delays) else None,
        waited=float(np.clip(w_ends - w_starts, 0, None).sum()),
        waited_on_it=float(seconds_in(full, w_starts, w_ends).sum()),
        tries=int((held & (ends > 0)).sum()),
    )
    return figures, used, demand


def _executor_only_wait(
    tries: _Tries, pick: np.ndarray, pool_used: np.ndarray, size: int, executor: np.ndarray,
    ex_size: int,
) -> float:  # fmt: skip
    """Task-seconds a pool's tasks waited while the executor was full and the pool not."""
    mask = (executor >= ex_size) & (pool_used < size)
    waits, holds, ends = tries.waits[pick], tries.holds[pick], tries.ends[pick]
    asked = ~np.isnan(waits)
    stop = np.where(np.isnan(holds), ends, holds)[asked]
    return float(seconds_in(mask, waits[asked], stop).sum())


def _chart(
    name: str, size: int, used: np.ndarray, demand: np.ndarray, start: datetime
) -> pd.DataFrame:
    """Per bucket of the window: the most slots used and wanted, and the limit."""
    rows = []
    for label, values in (("used", used), ("wanted", demand)):
        at, top = peaks(values, BUCKETS)
        rows.append(pd.DataFrame({"at": at, "series": label, "slots": top}))
    rows.append(pd.DataFrame({"at": at, "series": "limit", "slots": float(size)}))
    chart = pd.concat(rows, ignore_index=True)
    chart["at"] = pd.Timestamp(start) + pd.to_timedelta(chart["at"], unit="s")
    chart.insert(0, "limit", name)
    return chart


def _longest(rows: pd.DataFrame, tries: _Tries) -> pd.DataFrame:
    """The `LONGEST` tries that waited longest for a slot in the window (those still
    waiting too): source, id, waited_s, still_waiting."""
    stop = np.where(np.isnan(tries.holds), tries.ends, tries.holds)
    waited = np.where(stop > 0, stop - tries.waits, np.nan)
    waited[~(waited > 0)] = -1.0
    top = (
        np.argpartition(-waited, LONGEST)[:LONGEST]
        if len(waited) > LONGEST
        else np.arange(len(waited))
    )
    top = top[np.argsort(-waited[top], kind="stable")]
    top = top[waited[top] > 0]
    return pd.DataFrame(
        {
            "source": rows["source"].to_numpy()[top],
            "id": rows["id"].to_numpy()[top],
            "waited_s": np.round(waited[top], 1),
            "still_waiting": np.isnan(tries.holds[top]),
        }
    )


LONGEST_COLUMNS = (
    "dag_id",
    "run_id",
    "task_id",
    "waited_s",
    "still_waiting",
    "pool",
    "slots",
    "map_index",
    "try_number",
    "scheduled_at",
    "queued_at",
)


def _named(store: Store, longest: pd.DataFrame) -> pd.DataFrame:
    """The longest waits with their task instance and times (two lookups by id)."""
    found: dict[tuple[int, int], tuple[Any, ...]] = {}
    ids = {kind: [int(i) for i in longest["id"][longest["source"] == kind]] for kind in (0, 1)}
    with store.session(readonly=True) as session:
        if ids[TRY]:
            for row in session.execute(
                select(TaskTry.id, TaskTry.dag_id, TaskTry.run_id, TaskTry.task_id,
                       TaskTry.map_index, TaskTry.try_number, TaskTry.pool, TaskTry.pool_slots,
                       TaskTry.scheduled_at, TaskTry.queued_at).where(TaskTry.id.in_(ids[TRY]))
            ):  # fmt: skip
                found[(TRY, row[0])] = _ordered(row)
        if ids[WAITING]:
            for row in session.execute(
                select(TaskInstance.id, TaskInstance.dag_id, TaskInstance.run_id,
                       TaskInstance.task_id, TaskInstance.map_index,
                       TaskInstance.try_number + 1, TaskInstance.pool, TaskInstance.pool_slots,
                       TaskInstance.scheduled_at, TaskInstance.queued_at)
                .where(TaskInstance.id.in_(ids[WAITING]))
            ):  # fmt: skip
                found[(WAITING, row[0])] = _ordered(row)
    rows = []
    for r in longest.itertuples():
        names, rest = found.get((int(r.source), int(r.id)), ((), ()))
        if names:
            rows.append((*names, r.waited_s, bool(r.still_waiting), *rest))
    return frame(rows, LONGEST_COLUMNS)


def _ordered(row: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(dag_id, run_id, task_id), (pool, slots, map_index, try_number, scheduled, queued)
    of a looked-up row (id, dag, run, task, map_index, try, pool, slots, scheduled, queued)."""
    return tuple(row[1:4]), (row[6], row[7], row[4], row[5], row[8], row[9])


def analyse(
    rows: pd.DataFrame,
    start: datetime,
    end: datetime,
    sizes: Mapping[str, int],
    parallelism: int,
    window: str = "",
) -> Capacity:
    """The figures of the executor and each pool over [start, end) from `intervals` rows,
    counted per second of the window."""
    cells = int((end - start).total_seconds())
    tries = _arrays(rows, float(cells))
    ex, ex_used, ex_demand = _limit(EXECUTOR, parallelism, tries, None, cells, per_slot=False)
    charts = [_chart(EXECUTOR, parallelism, ex_used, ex_demand, start)]
    pools: list[LimitFigures] = []
    only_executor = 0.0  # waited while the executor was full and the task's pool was not
    for name in sorted(set(sizes) | set(tries.pools)):
        code = tries.pools.index(name) if name in tries.pools else -1
        pick = tries.pool == code
        size = int(sizes.get(name, 0))
        pool, used, demand = _limit(name, size, tries, pick, cells, per_slot=True)
        pools.append(pool)
        charts.append(_chart(name, size, used, demand, start))
        only_executor += _executor_only_wait(tries, pick, used, size, ex_used, parallelism)
    pools.sort(key=lambda f: (-f.full_share, -f.waited_on_it, f.name))
    figures = [replace(ex, waited_on_it=only_executor), *pools]
    return Capacity(
        window=window,
        start=start,
        end=end,
        figures=figures,
        chart=pd.concat(charts, ignore_index=True),
        longest=_longest(rows, tries),
        advice=advise(figures, window or f"{cells} s"),
    )


def report(store: Store, window: str, parallelism: int, *, now: datetime | None = None) -> Capacity:
    """The capacity page's window: read it (one statement), then analyse it."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; one of {', '.join(WINDOWS)}")
    if window != "1 h":  # from the per-minute rollup when it covers the window
        from console.queries import capacity_rollup

        rolled = capacity_rollup.report(store, window, parallelism, now=now)
        if rolled is not None:
            rolled.longest = _named(store, rolled.longest)
            return rolled
    end = utcnow(now).replace(microsecond=0)  # whole seconds: the grid's
    start = end - WINDOWS[window]
    rows = intervals(store, start, end)
    with store.session(readonly=True) as session:
        sizes = scheduling.pool_sizes(session)
    found = analyse(rows, start, end, sizes, parallelism, window)
    found.longest = _named(store, found.longest)
    return found
