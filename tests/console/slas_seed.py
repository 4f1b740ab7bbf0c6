"""A metastore for the SLAs page whose answers are known, relative to `now`:

- `nightly` run `late_1`: extract done, transform running for 10 min in pool `db` (its
  only slot), load to do; tasks usually take 5 / 30 / 20 min, so it ends at +40 min, its
  deadline is +15 min: at risk, slack -1500 s, held by its critical path (transform).
- `nightly` run `late_2`: extract waits for pool `db`; it ends at +55 min against a
  deadline of +20 min: slack -2100 s, held by the pool.
- misses: transform of late_1 (SLA 5 min ago, still running: 300 s late), a deadline
  of `done_run` missed by 600 s, `slow_start` started 900 s after it was due, and a miss
  two days old (in 7 d, not in 24 h).
- `paused_dag`, paused, whose next run was due an hour ago: not started.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from engine.parsing.parser import process_folders
from engine.store import pools
from engine.store.db import Store
from engine.store.models import Alert, Dag, DagRun, SlaMiss, TaskInstance, TaskTry

DAGS = """
import pendulum
from engine import DAG, EmptyOperator

with DAG("nightly", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
    EmptyOperator(task_id="extract") >> EmptyOperator(task_id="transform") >> EmptyOperator(
        task_id="load"
    )
"""
MINUTE = timedelta(minutes=1)
USUAL = {"extract": 5, "transform": 30, "load": 20}


@dataclass(frozen=True)
class SlaSeed:
    store: Store
    now: datetime


def _run(dag_id: str, run_id: str, state: str, at: datetime, **values: Any) -> DagRun:
    return DagRun(
        dag_id=dag_id, run_id=run_id, run_type="manual", state=state, logical_date=at,
        queued_at=at, conf={}, **values,
    )  # fmt: skip


def seed(store: Store, config: Any, now: datetime | None = None) -> SlaSeed:
    folder = Path(config["core.dags_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nightly.py").write_text(textwrap.dedent(DAGS))
    process_folders(store, config.with_overrides(core__load_examples=False))
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    with store.session() as session:
        pools.set_pool(session, "db", 1)
        history = _run("nightly", "history", "success", now - timedelta(days=1))
        late_1 = _run(
            "nightly", "late_1", "running", now - 20 * MINUTE, start_date=now - 20 * MINUTE
        )
        late_2 = _run("nightly", "late_2", "running", now - 5 * MINUTE, start_date=now - 5 * MINUTE)
        done = _run(
            "nightly",
            "done_run",
            "success",
            now - 5 * 60 * MINUTE,
            start_date=now - 5 * 60 * MINUTE,
            end_date=now - 3 * 60 * MINUTE,
        )
        slow = _run(
            "nightly",
            "slow_start",
            "success",
            now - 3 * 60 * MINUTE,
            start_date=now - 2 * 60 * MINUTE + 15 * MINUTE,
            end_date=now - 60 * MINUTE,
        )
        session.add_all([history, late_1, late_2, done, slow])  # fmt: skip
        session.flush()
        for task_id, minutes in USUAL.items():  # the duration history the forecast reads
            ti = TaskInstance(dag_id="nightly", run_id="history", task_id=task_id,
                              state="success", try_number=1)  # fmt: skip
            session.add(ti)
            session.flush()
            session.add(
                TaskTry(ti_id=ti.id, dag_id="nightly", run_id="history", task_id=task_id,
                        try_number=1, state="success", duration=60.0 * minutes,
                        start_date=now - timedelta(days=1), end_date=now - timedelta(days=1))
            )  # fmt: skip
        session.add_all(
            [
                TaskInstance(dag_id="nightly", run_id="late_1", task_id="extract",
                             state="success", try_number=1, end_date=now - 10 * MINUTE),
                TaskInstance(dag_id="nightly", run_id="late_1", task_id="transform",
                             state="running", try_number=1, pool="db",
                             start_date=now - 10 * MINUTE),
                TaskInstance(dag_id="nightly", run_id="late_1", task_id="load", state="none"),
                TaskInstance(dag_id="nightly", run_id="late_2", task_id="extract",
                             state="scheduled", pool="db", scheduled_at=now - 5 * MINUTE),
                TaskInstance(dag_id="nightly", run_id="late_2", task_id="transform",
                             state="none"),
                TaskInstance(dag_id="nightly", run_id="late_2", task_id="load", state="none"),
            ]
        )  # fmt: skip
        for run_id, deadline, warned in (("late_1", 15, 2), ("late_2", 20, 1)):
            session.add(
                Alert(fingerprint=f"risk-{run_id}", event="deadline_at_risk", severity="warning",
                      route="oncall", dag_id="nightly", run_id=run_id, status="sent",
                      created_at=now - warned * MINUTE,
                      payload={"deadline": (now + deadline * MINUTE).isoformat()})
            )  # fmt: skip
        misses = [
            ("task_sla", "late_1", "transform", now - 5 * MINUTE, now - 4 * MINUTE),
            ("dag_deadline", "done_run", "", now - 3 * 60 * MINUTE - 10 * MINUTE,
             now - 3 * 60 * MINUTE),
            ("run_not_started", "slow_start", "", now - 2 * 60 * MINUTE, now - 2 * 60 * MINUTE),
            ("dag_deadline", "history", "", now - timedelta(days=2), now - timedelta(days=2)),
        ]  # fmt: skip
        session.add_all(
            SlaMiss(kind=kind, dag_id="nightly", run_id=run_id, task_id=task_id,
                    deadline=deadline, detected_at=detected, state="running")
            for kind, run_id, task_id, deadline, detected in misses
        )  # fmt: skip
        session.add(
            Dag(dag_id="paused_dag", fileloc="/dags/paused.py", is_active=True, is_paused=True,
                schedule="@hourly", serialized={}, dag_hash="0" * 64,
                next_dagrun=now - 2 * 60 * MINUTE, next_dagrun_create_after=now - 60 * MINUTE)
        )  # fmt: skip
    return SlaSeed(store, now)
