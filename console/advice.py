"""Capacity tuning advice: which limit is binding and what to change, with the figures
that justify it. Pure functions of the figures `console.queries.capacity` measures over a
window, so each rule is tested on known numbers.

A slot is held from queued to end; a task waits for one from scheduled to queued. Wait
time is charged to the limit that was full while the task waited: its pool first, then
the executor (`core.parallelism`), else to neither (a DAG's max_active_tasks, a task's
max_active_tis_per_dag, or the scheduler loop itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

EXECUTOR = "parallelism"
DEFAULT_POOL = "default_pool"
#: a pool full this share of the window, with waits this long at p95, is too small
FULL_SHARE = 0.10
WAIT_P95 = 30.0
#: a pool whose peak use stays at or below this share of its slots limits nothing
IDLE_SHARE = 0.25
#: task-seconds of waiting charged to nobody that are worth a line
OTHER_WAIT = 600.0


@dataclass(frozen=True)
class LimitFigures:
    """One limit (a pool, or the executor) over a window."""

    name: str  #: the pool's name, or EXECUTOR
    size: int  #: its slots (core.parallelism for the executor)
    full_share: float  #: share of the window it had no open slot (0..1)
    peak_used: float  #: most slots held at once
    peak_demand: float  #: most slots held or waited for at once
    wait_p50: float | None  #: seconds waited for a slot, of tries that got one in the window
    wait_p95: float | None
    waited: float  #: task-seconds waited by its tasks in the window
    waited_on_it: float  #: the part of `waited` while this limit was full
    tries: int  #: tries that held a slot in the window

    @property
    def is_executor(self) -> bool:
        return self.name == EXECUTOR


@dataclass(frozen=True)
class Advice:
    """One finding: `level` is "change" (act on it), "info" or "ok"."""

    level: str
    limit: str
    text: str


def duration(seconds: float | None) -> str:
    """A wait in words: 45 s, 4 min, 2.5 h."""
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def headroom(peak_demand: float) -> int:
    """Slots for a peak demand: the peak plus a tenth (at least one slot)."""
    peak = math.ceil(peak_demand)
    return peak + max(1, round(peak / 10))


def _executor_binding(ex: LimitFigures, pools: Sequence[LimitFigures], window: str) -> Advice:
    on_pools = sum(p.waited_on_it for p in pools)
    target = headroom(ex.peak_demand)
    return Advice(
        "change",
        EXECUTOR,
        f"parallelism {ex.size} is the binding limit, not the pools: the executor was full "
        f"{_percent(ex.full_share)} of the last {window} and tasks waited "
        f"{duration(ex.waited_on_it)} (task-time) for an executor slot while their pools had "
        f"room (against {duration(on_pools)} on full pools); raise core.parallelism "
        f"{ex.size} → {target} (peak demand {ex.peak_demand:.0f}), if the workers can take it",
    )


def _pool_too_small(pool: LimitFigures, window: str, executor_binds: bool) -> Advice:
    target = max(headroom(pool.peak_demand), pool.size + 1)
    also = " (parallelism binds too: raise it first)" if executor_binds else ""
    return Advice(
        "change",
        pool.name,
        f"pool `{pool.name}` was full {_percent(pool.full_share)} of the last {window} and its "
        f"tasks waited {duration(pool.wait_p95)} at p95: raise slots {pool.size} → {target} "
        f"(peak demand {pool.peak_demand:.0f}){also}",
    )


def _pool_idle(pool: LimitFigures, window: str) -> Advice:
    return Advice(
        "info",
        pool.name,
        f"pool `{pool.name}` never used more than {pool.peak_used:.0f} of {pool.size} slots in "
        f"the last {window}: it limits nothing (slots {pool.size} → "
        f"{max(1, math.ceil(2 * pool.peak_used))} would still leave room for twice the peak)",
    )


def advise(figures: Sequence[LimitFigures], window: str) -> list[Advice]:
    """What to change, most binding first; one "ok" line when no limit binds."""
    executor = next((f for f in figures if f.is_executor), None)
    pools = [f for f in figures if not f.is_executor]
    found: list[Advice] = []
    executor_binds = (
        executor is not None
        and executor.full_share >= FULL_SHARE
        and executor.waited_on_it > sum(p.waited_on_it for p in pools)
    )
    if executor_binds:
        assert executor is not None
        found.append(_executor_binding(executor, pools, window))
    binding = [
        p
        for p in pools
        if p.full_share >= FULL_SHARE and p.waited_on_it > 0 and (p.wait_p95 or 0) >= WAIT_P95
    ]
    binding.sort(key=lambda p: p.waited_on_it, reverse=True)
    found += [_pool_too_small(p, window, executor_binds) for p in binding]
    if executor is not None:
        other = executor.waited - executor.waited_on_it - sum(p.waited_on_it for p in pools)
        if other >= OTHER_WAIT:
            found.append(
                Advice(
                    "info",
                    "other",
                    f"tasks waited {duration(other)} (task-time) in the last {window} while "
                    "neither their pool nor the executor was full: a DAG's max_active_tasks, "
                    "a task's max_active_tis_per_dag or a slow scheduler loop held them",
                )
            )
    idle = [
        p
        for p in pools
        if p.tries
        and p.name != DEFAULT_POOL  # the catch-all: roomy by design
        and p.size >= 4
        and p.full_share == 0
        and p.peak_used <= IDLE_SHARE * p.size
        and not (executor_binds and p.waited)  # its tasks waited on the executor instead
    ]
    found += [_pool_idle(p, window) for p in idle]
    if not any(a.level == "change" for a in found):
        found.insert(0, _all_well(figures, window))
    return found


def _all_well(figures: Sequence[LimitFigures], window: str) -> Advice:
    busiest = max(figures, key=lambda f: f.peak_used / f.size if f.size else 0.0, default=None)
    where = ""
    if busiest is not None and busiest.size:
        label = "the executor" if busiest.is_executor else f"pool `{busiest.name}`"
        where = f" (busiest: {label}, peak {busiest.peak_used:.0f} of {busiest.size})"
    return Advice("ok", "", f"no limit was binding in the last {window}: nothing to change{where}")
