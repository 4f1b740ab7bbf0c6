"""The capacity and SLAs pages' query functions on an existing metastore, each timed
(median of 3 after a warm-up), the capacity window split into its read and its analysis.

Run by hand: `.venv/bin/python bench/capacity_queries.py URL`, URL a metastore built by
bench/console_seed.py (bench/console_bench.py builds one), e.g. `sqlite:////tmp/bench.db`.
With `--rollup`, the per-minute capacity rollup is written first (timed: the writer's
first pass over the retention, then a steady pass) and the 24 h and 7 d windows are also
timed as the page reads them from it.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from console import rollup
from console.queries import capacity, capacity_rollup, slas
from engine.store.db import Store
from engine.store.scheduling import pool_sizes


def timed(label: str, call: Callable[[], Any], runs: int = 3) -> Any:
    result = call()  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    print(f"| {label} | {statistics.median(times) * 1000:.0f} |", flush=True)
    return result


def main() -> None:
    store = Store(sys.argv[1])
    now = datetime.now(UTC).replace(microsecond=0)
    with store.session(readonly=True) as session:
        sizes = pool_sizes(session)
    print("| query | median (ms) |\n|---|---|")
    for window, length in capacity.WINDOWS.items():
        start = now - length
        rows = timed(f"capacity {window}: read", lambda s=start: capacity.intervals(store, s, now))
        print(f"| (rows read for {window}) | {len(rows)} |")
        timed(
            f"capacity {window}: analysis",
            lambda r=rows, s=start, w=window: capacity.analyse(r, s, now, sizes, 32, w),
        )
    if "--rollup" in sys.argv:
        started = time.perf_counter()
        written, _ = rollup.catch_up(store, now, 32, 8 * 86400.0)
        print(
            f"| rollup: first pass ({written} buckets) | "
            f"{(time.perf_counter() - started) * 1000:.0f} |",
            flush=True,
        )
        timed(
            "rollup: a steady pass (last 5 minutes)",
            lambda: rollup.catch_up(store, now, 32, 8 * 86400.0),
        )
        for window in ("24 h", "7 d"):
            timed(
                f"capacity {window}: from the rollup",
                lambda w=window: capacity_rollup.report(store, w, 32, now=now),
            )
    timed("capacity: slots now", lambda: capacity.now_slots(store, 32))
    timed("slas: runs at risk", lambda: slas.runs_at_risk(store))
    timed("slas: misses (24 h)", lambda: slas.misses(store, "24 h"))
    timed(
        "slas: not started",
        lambda: slas.not_started(store, grace=300.0, heartbeat_timeout=30.0, max_active_runs=16),
    )


if __name__ == "__main__":
    main()
