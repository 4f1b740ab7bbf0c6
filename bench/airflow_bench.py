"""W1 and W2 on Apache Airflow and on dagwatch, alternately, both on PostgreSQL.

Run by hand, with Airflow in a virtual environment of its own (it pins SQLAlchemy 1.4,
dagwatch uses 2):

    python3 -m venv ~/airflow-venv
    ~/airflow-venv/bin/python -m pip install apache-airflow==2.10.5 psycopg2-binary
    .venv/bin/python bench/airflow_bench.py --airflow ~/airflow-venv/bin/airflow \
        --runs 3 --workloads w1,w2

Each round runs the workload once on dagwatch (exactly as `bench/scheduler_bench.py --db
postgres` does: `dagwatch scheduler`, local executor) and once on Airflow, each on a fresh
PostgreSQL database (created through `--pg-admin-url`, dropped after), so drift of a
shared machine hits both alike. The DAG has the same shape on both: no-op `@task`s, W1 a
chain of 20, W2 1 -> 200 -> 1. Airflow runs `airflow scheduler` (its DAG processor
inside) with the LocalExecutor, `core.parallelism` as given (32), a fresh `AIRFLOW_HOME`
and example DAGs off; the run is triggered with `airflow dags trigger` once the scheduler
heartbeats and the DAG is parsed. The figures come from each metastore:
  - trigger -> success: the run's end_date minus the time its trigger was committed
    (dagwatch: the trigger call; Airflow: the run's queued_at);
  - hop: end of a task to the start of the next, as in `scheduler_bench.py`;
  - tasks/s: tasks / (last end - first start);
  - scheduler CPU: user+system seconds of the scheduler process alone during the run;
  - machine CPU: busy seconds of all cores during the run, less this process's CPU.
Medians over the runs, with min and max, and the ratio Airflow / dagwatch of the medians.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scheduler_bench as bench  # the dagwatch side and the shared helpers

AIRFLOW_HEADER = """\
import pendulum
from airflow import DAG
from airflow.decorators import task

@task
def noop():
    return None

"""
START = "start_date=pendulum.datetime(2026, 1, 1, tz='UTC'), catchup=False, "


def airflow_source(workload: str) -> str:
    """The dagwatch workload's DAG, written for Airflow (which needs a start_date)."""
    body = bench.WORKLOADS[workload][1].replace("schedule=None, ", f"schedule=None, {START}")
    body = body.replace("schedule=None)", f"schedule=None, {START.rstrip(', ')})")
    return AIRFLOW_HEADER + body


@dataclass
class Figures:
    wall: float
    hops: list[float]
    tasks_per_second: float
    cpu: float
    machine_cpu: float


def _figures(rows: list[tuple], workload: str, wall: float, cpu: float, machine: float):
    """Figures from (task_id, start_date, end_date) rows of one run."""
    by_task = {task_id: (start, end) for task_id, start, end in rows}
    if workload == "w1":
        names = sorted(by_task)
        hops = [
            (by_task[b][0] - by_task[a][1]).total_seconds() for a, b in itertools.pairwise(names)
        ]
    else:
        first_end = by_task["first"][1]
        wide = [times for name, times in by_task.items() if name.startswith("w")]
        hops = [(start - first_end).total_seconds() for start, _ in wide]
        if "last" in by_task:
            hops.append((by_task["last"][0] - max(end for _, end in wide)).total_seconds())
    span = (max(e for _, _, e in rows) - min(s for _, s, _ in rows)).total_seconds()
    return Figures(wall, hops, len(rows) / span, cpu, machine)


def _query(url: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def airflow_run(airflow: str, workload: str, parallelism: int, admin_url: str) -> Figures:
    """One run of `workload` on a fresh Airflow home and PostgreSQL database."""
    database = bench.PgDatabase(admin_url)
    url = database.url.replace("postgresql+psycopg://", "postgresql://", 1)
    with tempfile.TemporaryDirectory(prefix="airflow-bench-") as home:
        Path(home, "dags").mkdir()
        Path(home, "dags", "bench.py").write_text(airflow_source(workload))
        env = {
            **os.environ,
            "AIRFLOW_HOME": home,
            "AIRFLOW__CORE__DAGS_FOLDER": str(Path(home, "dags")),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url.replace(
                "postgresql://", "postgresql+psycopg2://", 1
            ),
            "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
        }
        subprocess.run(
            [airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=900
        )
        scheduler = subprocess.Popen(
            [airflow, "scheduler"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            bench._wait_for(
                lambda: (
                    bool(_query(url, "SELECT 1 FROM dag WHERE dag_id = 'bench'"))
                    and bool(
                        _query(
                            url,
                            "SELECT 1 FROM job WHERE job_type = 'SchedulerJob'"
                            " AND state = 'running'",
                        )
                    )
                ),
                600,
                interval=0.5,
            )
            cpu_before = bench.cpu_seconds(scheduler.pid)
            machine_before = bench.machine_busy_seconds() - time.process_time()
            subprocess.run(
                [airflow, "dags", "trigger", "bench"],
                env=env,
                check=True,
                capture_output=True,
                timeout=300,
            )

            def finished() -> bool:
                rows = _query(url, "SELECT state FROM dag_run WHERE dag_id = 'bench'")
                return bool(rows) and rows[0][0] in ("success", "failed")

            bench._wait_for(finished, 1800, interval=0.1)
            cpu = bench.cpu_seconds(scheduler.pid) - cpu_before
            machine = bench.machine_busy_seconds() - time.process_time() - machine_before
            ((state, queued_at, end_date),) = _query(
                url, "SELECT state, queued_at, end_date FROM dag_run WHERE dag_id = 'bench'"
            )
            if state != "success":
                counts = _query(
                    url,
                    "SELECT state, count(*) FROM task_instance WHERE dag_id = 'bench'"
                    " GROUP BY state",
                )
                raise RuntimeError(f"the Airflow run ended {state}: task states {counts}")
            rows = _query(
                url,
                "SELECT task_id, start_date, end_date FROM task_instance WHERE dag_id = 'bench'",
            )
            return _figures(rows, workload, (end_date - queued_at).total_seconds(), cpu, machine)
        finally:
            os.killpg(scheduler.pid, signal.SIGTERM)
            try:
                scheduler.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(scheduler.pid, signal.SIGKILL)
            database.close()


def dagwatch_run(workload: str, parallelism: int, admin_url: str) -> Figures:
    database = bench.PgDatabase(admin_url)
    try:
        result = bench.one_run(workload, parallelism, db_url=database.url)
    finally:
        database.close()
    return Figures(
        result.wall, result.hops, result.tasks_per_second, result.cpu, result.machine_cpu
    )


def _line(label: str, ours: list[float], theirs: list[float], unit: str, scale=1.0) -> str:
    def cell(values: list[float]) -> str:
        return (
            f"{statistics.median(values) * scale:.1f} {unit}"
            f" ({min(values) * scale:.1f}-{max(values) * scale:.1f})"
        )

    ratio = statistics.median(theirs) / statistics.median(ours)
    return f"  {label:<22} dagwatch {cell(ours):<28} Airflow {cell(theirs):<28} x{ratio:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--airflow", required=True, help="the `airflow` command of its venv")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", default="w1,w2")
    parser.add_argument("--parallelism", type=int, default=32)
    parser.add_argument(
        "--pg-admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="where each run's database is created",
    )
    args = parser.parse_args()
    for workload in args.workloads.split(","):
        ours: list[Figures] = []
        theirs: list[Figures] = []
        for index in range(args.runs):
            ours.append(dagwatch_run(workload, args.parallelism, args.pg_admin_url))
            theirs.append(airflow_run(args.airflow, workload, args.parallelism, args.pg_admin_url))
            stamp = datetime.now().strftime("%H:%M:%S")
            print(
                f"{stamp} {workload} run {index + 1}: dagwatch {ours[-1].wall:.1f} s,"
                f" Airflow {theirs[-1].wall:.1f} s",
                flush=True,
            )
        print(f"{workload} ({bench.WORKLOADS[workload][0]}), {args.runs} runs each, PostgreSQL:")
        print(_line("trigger -> success", [r.wall for r in ours], [r.wall for r in theirs], "s"))
        print(
            _line(
                "hop median",
                [statistics.median(r.hops) for r in ours],
                [statistics.median(r.hops) for r in theirs],
                "ms",
                1000,
            )
        )
        print(
            _line(
                "tasks per second",
                [r.tasks_per_second for r in ours],
                [r.tasks_per_second for r in theirs],
                "",
            )
        )
        print(_line("scheduler CPU", [r.cpu for r in ours], [r.cpu for r in theirs], "s"))
        print(
            _line(
                "machine CPU", [r.machine_cpu for r in ours], [r.machine_cpu for r in theirs], "s"
            )
        )


if __name__ == "__main__":
    main()
