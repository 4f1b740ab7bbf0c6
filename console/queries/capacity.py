"""Pools and the executor: slots now, and over a window the occupancy, the share of time
each was full, the waits for a slot and who waited longest, from the recorded tries.

One query reads the window (`intervals`): the tries that overlap it (index on
task_try.end_date; open tries are the running ones) and the task instances waiting for
a slot or queued now, which have no try yet. The rest is arithmetic on step functions
(`Step`): a try holds `pool_slots` of its pool, and one executor slot, from queued to
end, and waits from scheduled to queued.

The pool sizes are today's (a pool resized during the window is judged by its new size).
A sensor in reschedule mode counts as holding its slot from its first poke to its end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import CompoundSelect, and_, func, literal, or_, select, union_all

from console.advice import EXECUTOR, Advice, LimitFigures, advise
from console.queries.common import frame, utcnow
from engine.states import TaskState
from engine.store import pools as pool_store
from engine.store import scheduling
from engine.store.db import Store
from engine.store.models import TaskInstance, TaskTry

WINDOWS: dict[str, timedelta] = {
    "1 h": timedelta(hours=1),
    "24 h": timedelta(hours=24),
    "7 d": timedelta(days=7),
}
#: points of the occupancy chart per window
BUCKETS = 120
#: rows of "waited longest"
LONGEST = 20
INTERVAL_COLUMNS = (
    "dag_id",
    "run_id",
    "task_id",
    "map_index",
    "try_number",
    "pool",
    "slots",
    "scheduled_at",
    "queued_at",
    "end_date",
    "state",
)
NOW_COLUMNS = ("limit", "slots", "running", "queued", "scheduled", "open")
_RUNNING = TaskState.RUNNING.value
_WAITING = (TaskState.SCHEDULED.value, TaskState.QUEUED.value)


# -- the reads -------------------------------------------------------------------------


def intervals(store: Store, start: datetime, end: datetime) -> pd.DataFrame:
    """Every try that held or waited for a slot during [start, end), and every task
    instance waiting or queued now, in one statement (`end_date` None: still going)."""
    with store.session(readonly=True) as session:
        rows = session.execute(intervals_statement(start, end)).all()
    return frame(rows, INTERVAL_COLUMNS)


def intervals_statement(start: datetime, end: datetime) -> CompoundSelect:
    """The statement of `intervals`: tries by ix_task_try_end_date, waiting task instances
    by ix_task_instance_state_pool."""
    held_from = func.coalesce(TaskTry.queued_at, TaskTry.start_date)
    tries = select(
        TaskTry.dag_id,
        TaskTry.run_id,
        TaskTry.task_id,
        TaskTry.map_index,
        TaskTry.try_number,
        TaskTry.pool,
        TaskTry.pool_slots,
        TaskTry.scheduled_at,
        held_from.label("queued_at"),
        TaskTry.end_date,
        TaskTry.state,
    ).where(
        or_(
            TaskTry.end_date >= start,
            and_(TaskTry.end_date.is_(None), TaskTry.state == _RUNNING),
        ),
        held_from < end,
    )
    waiting = select(
        TaskInstance.dag_id,
        TaskInstance.run_id,
        TaskInstance.task_id,
        TaskInstance.map_index,
        (TaskInstance.try_number + 1).label("try_number"),
        TaskInstance.pool,
        TaskInstance.pool_slots,
        TaskInstance.scheduled_at,
        TaskInstance.queued_at,
        literal(None).label("end_date"),
        TaskInstance.state,
    ).where(TaskInstance.state.in_(_WAITING))
    return union_all(tries, waiting)


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


# -- step functions --------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """A piecewise-constant function of time: `values[i]` on [times[i], times[i + 1])."""

    times: np.ndarray
    values: np.ndarray

    @classmethod
    def of(
        cls, starts: np.ndarray, ends: np.ndarray, weights: np.ndarray, t0: float, t1: float
    ) -> Step:
        """The sum of `weights` over the intervals [start, end) covering each moment of
        [t0, t1] (intervals clipped to it)."""
        starts, ends = np.clip(starts, t0, t1), np.clip(ends, t0, t1)
        keep = ends > starts
        starts, ends, weights = starts[keep], ends[keep], weights[keep]
        times = np.concatenate([starts, ends, [t0, t1]])
        deltas = np.concatenate([weights, -weights, [0.0, 0.0]])
        order = np.argsort(times, kind="stable")
        times, level = times[order], np.cumsum(deltas[order])
        edges = np.unique(times)
        last = np.searchsorted(times, edges, side="right") - 1
        return cls(edges, np.round(level[last][:-1], 9))

    def at(self, moments: np.ndarray) -> np.ndarray:
        """Values at these moments (each inside [times[0], times[-1]))."""
        index = np.clip(np.searchsorted(self.times, moments, side="right") - 1, 0, None)
        return self.values[np.minimum(index, len(self.values) - 1)]

    def on(self, edges: np.ndarray) -> Step:
        """The same function over the union of its breakpoints and `edges`."""
        times = np.union1d(self.times, edges)
        return Step(times, self.at(times[:-1]))

    def durations(self) -> np.ndarray:
        return np.diff(self.times)

    def share(self, mask: np.ndarray) -> float:
        """The share of the whole span where `mask` (per segment) holds."""
        span = self.times[-1] - self.times[0]
        return float((self.durations() * mask).sum() / span) if span > 0 else 0.0

    def overlap(self, mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Per interval [start, end): the time inside it where `mask` holds."""
        cumulative = np.concatenate([[0.0], np.cumsum(self.durations() * mask)])
        return np.interp(ends, self.times, cumulative) - np.interp(starts, self.times, cumulative)


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


def _seconds(column: pd.Series, origin: datetime) -> np.ndarray:
    """Seconds since `origin`; NaN where the time is missing."""
    stamps = pd.to_datetime(column, utc=True)
    return ((stamps - pd.Timestamp(origin)).dt.total_seconds()).to_numpy(dtype=float, copy=True)


@dataclass(frozen=True)
class _Tries:
    """The window's intervals as arrays of seconds since the window's start."""

    pool: np.ndarray
    slots: np.ndarray
    waits: np.ndarray  #: scheduled (NaN when unknown: no wait counted)
    holds: np.ndarray  #: queued (NaN: still waiting)
    ends: np.ndarray


def _arrays(rows: pd.DataFrame, start: datetime, now: float) -> _Tries:
    holds = _seconds(rows["queued_at"], start)
    holds[rows["state"].to_numpy() == TaskState.SCHEDULED.value] = np.nan
    ends = _seconds(rows["end_date"], start)
    ends = np.where(np.isnan(ends), now, ends)
    waits = _seconds(rows["scheduled_at"], start)
    waits = np.where(waits > holds, holds, waits)  # a clock step must not make waits negative
    return _Tries(
        rows["pool"].fillna("default_pool").to_numpy(dtype=object),
        rows["slots"].fillna(1).to_numpy(dtype=float),
        waits,
        holds,
        ends,
    )


def _limit(
    name: str, size: int, tries: _Tries, pick: np.ndarray, span: float, *, per_slot: bool
) -> tuple[LimitFigures, Step, Step]:
    """The figures of one limit over [0, span], its occupancy and its demand. A pool
    counts pool_slots (`per_slot`); the executor counts tries. `waited_on_it` is the wait
    while this limit was full."""
    weights = tries.slots[pick] if per_slot else np.ones(int(pick.sum()))
    holds, ends, waits = tries.holds[pick], tries.ends[pick], tries.waits[pick]
    held, asked = ~np.isnan(holds), ~np.isnan(waits)
    used = Step.of(holds[held], ends[held], weights[held], 0.0, span)
    wanted = asked | held
    demand = Step.of(
        np.where(asked, waits, holds)[wanted], ends[wanted], weights[wanted], 0.0, span
    )
    full = used.values >= size
    w_starts = np.clip(waits[asked], 0, span)
    w_ends = np.clip(np.where(held, holds, ends)[asked], 0, span)
    got = held & asked & (holds >= 0) & (holds < span)
    delays = holds[got] - waits[got]
    figures = LimitFigures(
        name=name,
        size=size,
        full_share=used.share(full),
        peak_used=float(used.values.max(initial=0.0)),
        peak_demand=float(demand.values.max(initial=0.0)),
        wait_p50=float(np.percentile(delays, 50)) if len(delays) else None,
        wait_p95=float(np.percentile(delays, 95)) if len(delays) else None,
        waited=float(np.clip(w_ends - w_starts, 0, None).sum()),
        waited_on_it=float(used.overlap(full, w_starts, w_ends).sum()),
        tries=int((held & (ends > 0)).sum()),
    )
    return figures, used, demand


def _executor_only_wait(
    tries: _Tries, pick: np.ndarray, pool_used: Step, size: int, executor: Step, ex_size: int
) -> float:
    """Task-seconds a pool's tasks waited while the executor was full and the pool not."""
    edges = np.union1d(pool_used.times, executor.times)
    pool_on, ex_on = pool_used.on(edges), executor.on(edges)
    mask = (ex_on.values >= ex_size) & (pool_on.values < size)
    waits, holds, ends = tries.waits[pick], tries.holds[pick], tries.ends[pick]
    asked = ~np.isnan(waits)
    stop = np.where(np.isnan(holds), ends, holds)[asked]
    span = edges[-1]
    return float(ex_on.overlap(mask, np.clip(waits[asked], 0, span), np.clip(stop, 0, span)).sum())


def _chart(name: str, size: int, used: Step, demand: Step, start: datetime, span: float):
    """Per bucket of the window: the most slots used and wanted, and the limit."""
    edges = np.linspace(0.0, span, BUCKETS + 1)
    rows = []
    for label, step in (("used", used), ("wanted", demand)):
        fine = step.on(edges)
        index = np.searchsorted(fine.times, edges[:-1])
        peaks = np.maximum.reduceat(fine.values, index) if len(fine.values) else np.zeros(BUCKETS)
        rows.append(pd.DataFrame({"at": edges[:-1], "series": label, "slots": peaks}))
    rows.append(pd.DataFrame({"at": edges[:-1], "series": "limit", "slots": float(size)}))
    chart = pd.concat(rows, ignore_index=True)
    chart["at"] = pd.Timestamp(start) + pd.to_timedelta(chart["at"], unit="s")
    chart.insert(0, "limit", name)
    return chart


def _longest(rows: pd.DataFrame, tries: _Tries, span: float) -> pd.DataFrame:
    """The tries that waited longest for a slot in the window (those still waiting too)."""
    stop = np.where(np.isnan(tries.holds), tries.ends, tries.holds)
    waited = stop - tries.waits
    inside = ~np.isnan(waited) & (stop > 0) & (waited > 0)
    picked = rows.loc[inside].assign(
        waited_s=np.round(waited[inside], 1), still_waiting=np.isnan(tries.holds[inside])
    )
    picked = picked.sort_values("waited_s", ascending=False).head(LONGEST)
    columns = ["dag_id", "run_id", "task_id", "map_index", "try_number", "pool", "slots"]
    return picked[[*columns, "scheduled_at", "queued_at", "waited_s", "still_waiting"]]


def analyse(
    rows: pd.DataFrame,
    start: datetime,
    end: datetime,
    sizes: Mapping[str, int],
    parallelism: int,
    window: str = "",
) -> Capacity:
    """The figures of the executor and each pool over [start, end) from `intervals` rows."""
    span = (end - start).total_seconds()
    tries = _arrays(rows, start, span)
    everything = np.ones(len(rows), dtype=bool)
    ex, ex_used, ex_demand = _limit(EXECUTOR, parallelism, tries, everything, span, per_slot=False)
    charts = [_chart(EXECUTOR, parallelism, ex_used, ex_demand, start, span)]
    pools: list[LimitFigures] = []
    only_executor = 0.0  # waited while the executor was full and the task's pool was not
    for name in sorted(set(sizes) | set(tries.pool)):
        pick = tries.pool == name
        size = int(sizes.get(name, 0))
        pool, used, demand = _limit(name, size, tries, pick, span, per_slot=True)
        pools.append(pool)
        charts.append(_chart(name, size, used, demand, start, span))
        only_executor += _executor_only_wait(tries, pick, used, size, ex_used, parallelism)
    pools.sort(key=lambda f: (-f.full_share, -f.waited_on_it, f.name))
    figures = [replace(ex, waited_on_it=only_executor), *pools]
    return Capacity(
        window=window,
        start=start,
        end=end,
        figures=figures,
        chart=pd.concat(charts, ignore_index=True),
        longest=_longest(rows, tries, span),
        advice=advise(figures, window or f"{span:.0f} s"),
    )


def report(store: Store, window: str, parallelism: int, *, now: datetime | None = None) -> Capacity:
    """The capacity page's window: read it (one statement), then analyse it."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; one of {', '.join(WINDOWS)}")
    end = utcnow(now)
    start = end - WINDOWS[window]
    rows = intervals(store, start, end)
    with store.session(readonly=True) as session:
        sizes = scheduling.pool_sizes(session)
    return analyse(rows, start.astimezone(UTC), end, sizes, parallelism, window)
