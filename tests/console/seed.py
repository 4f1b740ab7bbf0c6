"""A small metastore with known contents: two DAGs, four runs in every interesting state,
tries with logs, an SLA miss, alerts, an import error and running jobs.

Rows are inserted directly with their states (the state machine guards changes, not
inserts), so the figures the console shows can be compared with what is here.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from engine.execution.runner import log_path_for
from engine.parsing.parser import process_folders
from engine.store.db import Store
from engine.store.error_signature import signature
from engine.store.models import (
    Alert,
    DagRun,
    ImportError_,
    Job,
    RenderedFields,
    SlaMiss,
    TaskInstance,
    TaskTry,
    XCom,
)

DAGS = """
import pendulum
from engine import DAG, EmptyOperator, Label, Param, TaskGroup, task

with DAG(
    "pipeline",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1),
    catchup=False,
    tags=["etl", "prod"],
    default_args={"owner": "data-eng"},
    params={"n": Param(1, type="integer")},
):
    extract = EmptyOperator(task_id="extract")
    with TaskGroup("shape"):
        transform = EmptyOperator(task_id="transform")

    @task
    def double(x):
        return 2 * x

    extract >> Label("rows") >> transform >> double.expand(x=[1, 2, 3])

with DAG("reports", schedule=None, start_date=pendulum.datetime(2026, 1, 1), tags=["reports"]):
    EmptyOperator(task_id="render")
"""

BROKEN = "broken.py"


@dataclass(frozen=True)
class Seeded:
    """The store and what the seed put in it."""

    store: Store
    now: datetime
    log_folder: Path
    expected: dict[str, int]


def _run(dag_id: str, run_id: str, state: str, start: datetime, end: datetime | None) -> DagRun:
    return DagRun(
        dag_id=dag_id,
        run_id=run_id,
        run_type="manual",
        state=state,
        logical_date=start,
        data_interval_start=start,
        data_interval_end=start,
        queued_at=start,
        start_date=start,
        end_date=end,
        conf={},
    )


def _ti(run: DagRun, task_id: str, state: str, **values: Any) -> TaskInstance:
    values.setdefault("map_index", -1)
    values.setdefault("try_number", 1 if state not in ("none", "queued") else 0)
    return TaskInstance(
        dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, state=state, **values
    )


def seed(store: Store, config: Any, now: datetime | None = None) -> Seeded:
    """Parse the DAGs, then insert runs, task instances, tries and the rest, relative to
    `now` (default: the clock, so pages that read the clock see the same figures)."""
    folder = Path(config["core.dags_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipelines.py").write_text(textwrap.dedent(DAGS))
    report = process_folders(store, config.with_overrides(core__load_examples=False))
    assert report.dags_found == 2, report
    logs = Path(config["logging.base_log_folder"])
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    ok = _run(
        "pipeline", "r1_ok", "success", now - timedelta(days=2), now - timedelta(days=2, minutes=-5)
    )
    bad = _run(
        "pipeline", "r2_failed", "failed", now - timedelta(hours=3), now - timedelta(hours=2)
    )
    live = _run("pipeline", "r3_running", "running", now - timedelta(minutes=10), None)
    waiting = _run("reports", "r4_queued", "running", now - timedelta(minutes=1), None)
    tis = [
        _ti(ok, "extract", "success", start_date=ok.start_date, end_date=ok.end_date),
        _ti(ok, "shape.transform", "success", start_date=ok.start_date, end_date=ok.end_date),
        *(
            _ti(
                ok, "double", "success", map_index=i, start_date=ok.start_date, end_date=ok.end_date
            )
            for i in range(3)
        ),
        _ti(bad, "extract", "success", start_date=bad.start_date, end_date=bad.start_date),
        _ti(
            bad,
            "shape.transform",
            "failed",
            try_number=2,
            max_tries=2,
            start_date=bad.start_date,
            end_date=bad.end_date,
        ),
        _ti(bad, "double", "upstream_failed", try_number=0, end_date=bad.end_date),
        _ti(live, "extract", "success", start_date=live.start_date, end_date=live.start_date),
        _ti(
            live,
            "shape.transform",
            "running",
            start_date=now - timedelta(minutes=4),
            hostname="worker-1",
        ),
        _ti(live, "double", "none", try_number=0),
        _ti(waiting, "render", "queued", queued_at=now - timedelta(seconds=30)),
    ]
    with store.session() as session:
        session.add_all([ok, bad, live, waiting])
        session.flush()
        session.add_all(tis)
        session.flush()
        transform = next(
            t for t in tis if t.run_id == "r2_failed" and t.task_id == "shape.transform"
        )
        for number, error in ((1, "ValueError: first"), (2, "ValueError: second")):
            path = log_path_for(logs, "pipeline", "r2_failed", "shape.transform", number)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"attempt {number} log line\n{error}\n")
            session.add(
                TaskTry(
                    ti_id=transform.id,
                    dag_id="pipeline",
                    run_id="r2_failed",
                    task_id="shape.transform",
                    map_index=-1,
                    try_number=number,
                    state="failed" if number == 2 else "up_for_retry",
                    start_date=bad.start_date + timedelta(minutes=number),
                    end_date=bad.start_date + timedelta(minutes=number, seconds=30),
                    duration=30.0,
                    hostname="worker-1",
                    log_path=str(path),
                    error=error,
                    error_signature=signature(error),
                )
            )
        session.add(
            RenderedFields(
                dag_id="pipeline",
                run_id="r2_failed",
                task_id="shape.transform",
                map_index=-1,
                try_number=2,
                fields={"bash_command": "echo *** 2026-04-10"},
            )
        )
        session.add(
            XCom(
                dag_id="pipeline",
                run_id="r1_ok",
                task_id="extract",
                map_index=-1,
                key="return_value",
                value={"rows": 42},
                timestamp=ok.end_date,
            )
        )
        session.add_all(
            [
                SlaMiss(
                    kind="task_sla",
                    dag_id="pipeline",
                    run_id="r2_failed",
                    task_id="shape.transform",
                    deadline=now - timedelta(hours=2),
                    detected_at=now - timedelta(hours=1),
                    state="failed",
                ),
                SlaMiss(
                    kind="dag_deadline",
                    dag_id="pipeline",
                    run_id="r1_ok",
                    task_id="",
                    deadline=now - timedelta(days=2),
                    detected_at=now - timedelta(days=2),
                    state="success",
                ),
            ]
        )
        session.add_all(
            [
                _alert("a1", "task_failed", "pending", now, run_id="r2_failed"),
                _alert(
                    "a2",
                    "task_failed",
                    "failed",
                    now,
                    run_id="r2_failed",
                    last_error="slack://T000/B000/XXXXsecret: 404 from the channel",
                ),
                _alert("a3", "task_failed", "sent", now, run_id="r2_failed"),
                _alert("a4", "deadline_at_risk", "sent", now, run_id="r3_running"),
            ]
        )
        session.add(
            ImportError_(
                filename=str(folder / BROKEN),
                timestamp=now,
                stacktrace="Traceback\nSyntaxError: bad",
            )
        )
        session.add_all(
            [
                Job(
                    job_type="scheduler",
                    state="running",
                    hostname="host-a",
                    pid=101,
                    start_date=now - timedelta(hours=1),
                    latest_heartbeat=now - timedelta(seconds=3),
                    last_loop_seconds=0.05,
                    slots_used=2,
                    slots_open=30,
                ),
                Job(
                    job_type="dag_processor",
                    state="running",
                    hostname="host-a",
                    pid=102,
                    start_date=now - timedelta(hours=1),
                    latest_heartbeat=now - timedelta(seconds=20),
                    last_loop_seconds=0.2,
                ),
            ]
        )
    expected = {
        "queued": 1,
        "running": 1,
        "failed_tasks_24h": 2,
        "failed_runs_24h": 1,
        "sla_misses_24h": 1,
        "runs_at_risk": 1,
        "import_errors": 1,
        "undelivered_alerts": 2,
    }
    return Seeded(store, now, logs, expected)


def _alert(key: str, event: str, status: str, now: datetime, **values: Any) -> Alert:
    return Alert(
        fingerprint=key,
        event=event,
        dag_id="pipeline",
        status=status,
        created_at=now - timedelta(minutes=30),
        payload={},
        **values,
    )
