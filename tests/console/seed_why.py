"""More of the seeded metastore for "why isn't it running?", failures and parsing, with
known answers:

- DAG `limited` (max_active_runs=1): run l1_running holds the only run slot, so run
  l2_queued waits for it; in l1_running, `backup` (scheduled) waits for pool `db`
  (2 slots), held by limited/l1_running/load (20 min) and reports/r5_db/render (6 min);
  `flaky` retries in 4 min.
- Three failed tries share one signature (FileNotFoundError on a dated path) in the
  last 24 h, in two DAGs; one more, 3 days old, counts in the 7-day window only.
- DAG files with known parse times, and an import error first seen two days ago.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update

from engine.parsing.parser import process_folders
from engine.store import pools
from engine.store.error_signature import signature
from engine.store.models import Dag, DagFile, DagRun, ImportError_, TaskInstance, TaskTry
from tests.console.seed import Seeded
from tests.console.seed import _run as seed_run

LIMITED = """
import pendulum
from engine import DAG, EmptyOperator

with DAG(
    "limited", schedule=None, start_date=pendulum.datetime(2026, 1, 1), max_active_runs=1
):
    EmptyOperator(task_id="load", pool="db") >> EmptyOperator(task_id="publish")
    EmptyOperator(task_id="backup", pool="db")
    EmptyOperator(task_id="flaky", retries=3)
"""

#: the problem three failures of the last 24 h share (and a fourth 3 days ago)
MISSING = "FileNotFoundError: [Errno 2] No such file or directory: '/data/in/{day}/orders.csv'"
OTHER = "KeyError: 'customer_id'"


@dataclass(frozen=True)
class WhySeeded:
    seeded: Seeded
    now: datetime
    store: Any


def _run(dag_id: str, run_id: str, state: str, at: datetime) -> DagRun:
    run = seed_run(dag_id, run_id, state, at, None)
    if state == "queued":
        run.start_date = None
    return run


def _ti(run: DagRun, task_id: str, state: str, **values: Any) -> TaskInstance:
    values.setdefault("try_number", 0 if state in ("none", "scheduled") else 1)
    return TaskInstance(
        dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, map_index=-1, state=state, **values
    )


def seed_why(seeded: Seeded, config: Any) -> WhySeeded:
    store, now = seeded.store, seeded.now
    folder = Path(config["core.dags_folder"])
    (folder / "limited.py").write_text(textwrap.dedent(LIMITED))
    process_folders(store, config.with_overrides(core__load_examples=False))
    first = now - timedelta(minutes=30)
    l0 = _run("limited", "l0_failed", "failed", now - timedelta(days=3))
    l1 = _run("limited", "l1_running", "running", first)
    l2 = _run("limited", "l2_queued", "queued", now - timedelta(minutes=2))
    r5 = _run("reports", "r5_db", "running", now - timedelta(minutes=7))
    r6 = _run("pipeline", "r6_failed", "failed", now - timedelta(hours=5))
    tis = [
        _ti(l0, "load", "failed", try_number=3, max_tries=2, end_date=now - timedelta(hours=1)),
        _ti(l0, "publish", "upstream_failed"),
        _ti(l0, "backup", "success"),
        _ti(
            l1,
            "load",
            "running",
            pool="db",
            queued_at=now - timedelta(minutes=20),
            start_date=now - timedelta(minutes=19),
            hostname="worker-1",
        ),
        _ti(l1, "publish", "none"),
        _ti(l1, "backup", "scheduled", pool="db", scheduled_at=now - timedelta(minutes=3)),
        _ti(l1, "flaky", "up_for_retry", max_tries=3, next_retry_at=now + timedelta(minutes=4)),
        _ti(l2, "load", "none", pool="db"),
        _ti(l2, "publish", "none"),
        _ti(l2, "backup", "none", pool="db"),
        _ti(
            r5,
            "render",
            "running",
            pool="db",
            queued_at=now - timedelta(minutes=6),
            start_date=now - timedelta(minutes=5),
            hostname="worker-2",
        ),
        _ti(r6, "extract", "failed", end_date=now - timedelta(hours=4)),
        _ti(r6, "shape.transform", "upstream_failed"),
        _ti(r6, "double", "upstream_failed"),
    ]
    with store.session() as session:
        pools.set_pool(session, "db", 2)
        session.execute(update(Dag).values(is_paused=False))
        session.add_all([l0, l1, l2, r5, r6])
        session.flush()
        session.add_all(tis)
        session.flush()
        load = next(t for t in tis if t.run_id == "l0_failed" and t.task_id == "load")
        extract = next(t for t in tis if t.run_id == "r6_failed")
        tries = [
            (load, 1, "up_for_retry", now - timedelta(days=3), MISSING.format(day="2026-04-07")),
            (load, 2, "up_for_retry", now - timedelta(hours=2), MISSING.format(day="2026-04-09")),
            (load, 3, "failed", now - timedelta(minutes=50), MISSING.format(day="2026-04-10")),
            (extract, 1, "failed", now - timedelta(hours=4), MISSING.format(day="2026-04-08")),
            (extract, 2, "success", now - timedelta(hours=3), None),
        ]
        for ti, number, state, end, error in tries:
            session.add(
                TaskTry(
                    ti_id=ti.id,
                    dag_id=ti.dag_id,
                    run_id=ti.run_id,
                    task_id=ti.task_id,
                    map_index=-1,
                    try_number=number,
                    state=state,
                    start_date=end - timedelta(seconds=20),
                    end_date=end,
                    duration=20.0,
                    hostname="worker-1",
                    log_path=f"/logs/{ti.dag_id}/{ti.run_id}/{ti.task_id}/{number}.log",
                    error=error,
                    error_signature=signature(error),
                )
            )
        session.add(
            DagFile(
                fileloc=str(folder / "slow.py"),
                content_hash="x",
                last_parsed=now - timedelta(hours=1),
                parse_duration=2.5,
                dag_count=3,
                task_count=12,
            )
        )
        session.add(
            ImportError_(
                filename=str(folder / "old_broken.py"),
                first_seen=now - timedelta(days=2),
                timestamp=now - timedelta(minutes=1),
                stacktrace='Traceback (most recent call last):\n  File "old_broken.py"\n'
                "ModuleNotFoundError: No module named 'pandas_extra'",
            )
        )
    return WhySeeded(seeded, now, store)
