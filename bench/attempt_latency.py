"""Local executor start-up: time from `queue()` to the runner's `running` transition.

Run by hand: `.venv/bin/python bench/attempt_latency.py [--attempts 30] [--url URL]`.
Queues no-op EmptyOperator attempts one at a time (the forkserver already warm) and
reports the median and spread of queue() → task_instance.start_date, plus the time to
the executor's event.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.config import load_config
from engine.execution.base import AttemptRequest
from engine.execution.local import LocalExecutor
from engine.parsing.serialization import serialize_dag
from engine.states import DagRunState, TaskState
from engine.store import runs, transitions
from engine.store.db import Store
from engine.store.migrate import migrate

DAG_FILE = """\
from engine import DAG, EmptyOperator

with DAG("latency", schedule=None) as dag:
    for i in range({n}):
        EmptyOperator(task_id=f"t{{i}}")
"""


def prepare(store: Store, path: Path) -> tuple[Any, list[AttemptRequest]]:
    """Import the DAG file at `path`, give it one run, and queue every task instance of it;
    returns (the DAG, one request per task instance)."""
    from engine.parsing.parser import import_dag_file

    (dag,) = import_dag_file(path)
    now = datetime.now(UTC)
    run_id = f"bench_{time.time_ns()}"
    with store.session() as session:
        runs.create_dag_run(
            session, serialize_dag(dag), run_id=run_id, run_type="manual",
            logical_date=now, data_interval=None, conf=None, state=DagRunState.RUNNING, now=now,
        )  # fmt: skip
        session.flush()
        tis = runs.get_task_instances(session, dag.dag_id, run_id)
        ids = [ti.id for ti in tis]
        for before, after in (
            (TaskState.NONE, TaskState.SCHEDULED),
            (TaskState.SCHEDULED, TaskState.QUEUED),
        ):
            transitions.transition_task_instances(session, ids, expected=before, to=after, at=now)
        return dag, [AttemptRequest(ti.id, dag.dag_id, run_id, ti.task_id, str(path)) for ti in tis]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attempts", type=int, default=30)
    parser.add_argument("--url", help="metastore URL (default: SQLite in a temporary home)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dagwatch-bench-") as home:
        env = {"DAGWATCH_HOME": home, "DAGWATCH__CORE__LOAD_EXAMPLES": "false"}
        if args.url:
            env["DAGWATCH__DATABASE__SQL_ALCHEMY_CONN"] = args.url
        config = load_config(env)
        store = Store.from_config(config)
        migrate(store)
        path = Path(home, "latency_dag.py")
        path.write_text(DAG_FILE.format(n=args.attempts))
        _, requests = prepare(store, path)
        executor = LocalExecutor(config, parallelism=1)
        executor.start()
        to_running, to_event = [], []
        for request in requests:
            queued_at = datetime.now(UTC)
            started = time.perf_counter()
            executor.queue([request])
            events = []
            while not events:
                executor.wait(5.0)
                events = executor.collect()
            to_event.append(time.perf_counter() - started)
            assert events[0].state is TaskState.SUCCESS, events
            with store.session() as session:
                ti = runs.get_task_instance(session, request.ti_id)
                to_running.append((ti.start_date - queued_at).total_seconds())
        executor.end(grace=5)
        store.dispose()
    for label, values in (("queue -> running", to_running), ("queue -> event", to_event)):
        ms = sorted(v * 1000 for v in values)
        print(
            f"{label:<18} median {statistics.median(ms):6.1f} ms  "
            f"min {ms[0]:6.1f}  p90 {ms[int(len(ms) * 0.9) - 1]:6.1f}  max {ms[-1]:6.1f}"
            f"  (n={len(ms)}, {store.dialect})"
        )


if __name__ == "__main__":
    main()
