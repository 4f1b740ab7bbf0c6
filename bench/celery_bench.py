"""W2 and a 5,000-task fan-out on PostgreSQL: the celery executor with two `dagwatch
worker` processes against the local executor, side by side.

Run by hand, with PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (or
`--broker amqp://guest:guest@127.0.0.1:5672//`):

    .venv/bin/python bench/celery_bench.py [--runs 3] [--workloads w2,w4-5000] [--slots 8]
        [--schedulers 1,2]

Both executors get the same number of slots: the local executor `core.parallelism =
--slots`; celery `core.parallelism = --slots` and two workers of `--slots / 2` pool
processes each. Each run has a fresh database and its own Celery queue; the workers are
started and ready before the trigger, so their start-up is not counted. `--schedulers
1,2` runs celery once with one `dagwatch scheduler` and once with two on the same
database (they share the run through row locks; the local executor always runs with one,
since its workers belong to their scheduler). Figures, from the metastore's attempt
records (as `bench/scheduler_bench.py` takes them):
  - tasks/s: tasks / (last end - first start);
  - queued → running p50 / p95: queued_at of each task instance to the start of its try;
  - trigger → success: wall time from the trigger to the run's recorded end;
  - scheduler CPU per task: user + system CPU of the scheduler processes alone (not
    their local workers, not the Celery workers) during the run, summed over the
    schedulers, divided by the tasks.
Medians over the runs.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from scheduler_bench import HEADER, WORKLOADS, _p95, _wait_for, cpu_seconds  # noqa: E402
from sqlalchemy import select  # noqa: E402

from tests.helpers import create_pg_database, drop_pg_database  # noqa: E402


def one_run(
    workload: str, executor: str, slots: int, broker: str, schedulers: int = 1
) -> dict[str, float]:
    from engine import api
    from engine.config import load_config
    from engine.states import DAG_RUN_FINISHED
    from engine.store.db import Store
    from engine.store.migrate import migrate
    from engine.store.models import Dag, DagRun, Job, TaskInstance, TaskTry, Worker

    url = create_pg_database("dagwatch_bench")
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="dagwatch-bench-") as home:
        Path(home, "dags").mkdir()
        Path(home, "dags", "bench.py").write_text(HEADER + WORKLOADS[workload][1])
        env = {
            **os.environ,
            "DAGWATCH_HOME": home,
            "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": url,
            "DAGWATCH__CORE__EXECUTOR": executor,
            "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
            "DAGWATCH__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
            "DAGWATCH__CORE__PARALLELISM": str(slots),
            "DAGWATCH__CORE__DEFAULT_POOL_SLOTS": "10000",
            "DAGWATCH__CELERY__BROKER_URL": broker,
            "DAGWATCH__CELERY__DEFAULT_QUEUE": f"bench{secrets.token_hex(4)}",
            "DAGWATCH__LOGGING__LEVEL": "WARNING",
        }
        store = Store.from_config(load_config(env))
        migrate(store)
        logs = Path(home)

        def start(name: str, *args: str) -> subprocess.Popen:
            out = (logs / f"{name}.log").open("w")
            process = subprocess.Popen(
                [sys.executable, "-m", "engine", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            processes.append(process)
            return process

        try:
            if executor == "celery":
                for name in ("w1", "w2"):
                    start(name, "worker", "--concurrency", str(max(1, slots // 2)),
                          "--name", f"{name}@bench")  # fmt: skip
            pids = [start(f"scheduler{n}", "scheduler").pid for n in range(schedulers)]

            def ready() -> bool:
                with store.session(readonly=True) as session:
                    jobs = session.execute(
                        select(Job.id).where(Job.job_type == "scheduler", Job.state == "running")
                    ).all()
                    up = len(jobs) == schedulers
                    parsed = session.get(Dag, "bench") is not None
                    workers = len(session.execute(select(Worker.id)).all())
                return up and parsed and (executor != "celery" or workers == 2)

            _wait_for(ready, 120)
            if executor == "celery":
                time.sleep(3)  # the workers' consumers are up a moment after their rows
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
            started = datetime.now(UTC)
            run = api.trigger_dag(store, "bench", actor="bench", now=started)

            def finished() -> bool:
                with store.session(readonly=True) as session:
                    state = session.execute(
                        select(DagRun.state).where(DagRun.run_id == run.run_id)
                    ).scalar()
                return state in DAG_RUN_FINISHED

            _wait_for(finished, 1800, interval=0.2)
            cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
            with store.session(readonly=True) as session:
                state, end = session.execute(
                    select(DagRun.state, DagRun.end_date).where(DagRun.run_id == run.run_id)
                ).one()
                tries = session.execute(select(TaskTry)).scalars().all()
                queued_at = dict(
                    session.execute(select(TaskInstance.task_id, TaskInstance.queued_at)).all()
                )
            failed = [(t.task_id, t.state, t.error) for t in tries if t.state != "success"]
            assert state == "success", (state, failed[:5])
            delays = [(t.start_date - queued_at[t.task_id]).total_seconds() for t in tries]
            span = max(t.end_date for t in tries) - min(t.start_date for t in tries)
            return {
                "wall": (end - started).total_seconds(),
                "tasks_per_s": len(tries) / span.total_seconds(),
                "p50_ms": statistics.median(delays) * 1000,
                "p95_ms": _p95(delays) * 1000,
                "cpu_ms_per_task": cpu / len(tries) * 1000,
            }
        finally:
            for process in reversed(processes):
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
            _show_warnings(logs)
            store.dispose()
            drop_pg_database(url)


def _show_warnings(logs: Path) -> None:
    """Print the processes' warnings and errors (a re-sent attempt, a lost one...): a run
    much slower than the others is explained there, and its home is deleted next."""
    for log in sorted(logs.glob("*.log")):
        lines = [
            line for line in log.read_text().splitlines() if "WARNING" in line or "ERROR" in line
        ]
        for line in lines[:5]:
            print(f"    {log.stem}: {line[:300]}", flush=True)
        if len(lines) > 5:
            print(f"    {log.stem}: ... {len(lines) - 5} more", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", default="w2,w4-5000")
    parser.add_argument("--executors", default="local,celery")
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--schedulers", default="1", help="scheduler counts for celery runs, e.g. 1,2"
    )
    args = parser.parse_args()
    setups = [
        (executor, count)
        for executor in args.executors.split(",")
        for count in ([int(n) for n in args.schedulers.split(",")] if executor == "celery" else [1])
    ]
    for workload in args.workloads.split(","):
        print(f"{workload}: {WORKLOADS[workload][0]}, {args.slots} slots, PostgreSQL")
        for executor, count in setups:
            runs = [
                one_run(workload, executor, args.slots, args.broker, count)
                for _ in range(args.runs)
            ]
            medians = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            each = ", ".join(f"{r['tasks_per_s']:.1f}" for r in runs)
            label = f"{executor} x{count}"
            print(
                f"  {label:<10} tasks/s {medians['tasks_per_s']:6.1f}   "
                f"queued->running p50 {medians['p50_ms']:7.1f} ms "
                f"p95 {medians['p95_ms']:7.1f} ms   "
                f"trigger->success {medians['wall']:6.1f} s   "
                f"scheduler CPU {medians['cpu_ms_per_task']:5.2f} ms/task   "
                f"(each run: {each} tasks/s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
