"""Failure -> first page latency of an incident, through a real scheduler.

Run by hand: `.venv/bin/python bench/incident_latency.py [--rounds 5] [--group-wait 5]`.
A `dagwatch scheduler` (local executor, SQLite in a temporary `$DAGWATCH_HOME`) pages a
loopback HTTP receiver through one route with the default grouping (one incident per DAG
run). Two DAGs: one task that fails, and 20 tasks that fail at once (a storm). Each round
triggers a run of each, one after the other, and measures from the first task's failure
(its end_date in the metastore) to the arrival of the first page about that run; it also
counts the pages each run got by the end (an update follows group_interval after the first
page when the run's failure came after group_wait). Reports the median and spread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DAGS = """\
from engine import DAG, task

for dag_id, width in (("single", 1), ("storm", 20)):
    with DAG(dag_id, schedule=None, max_active_runs=1):
        for number in range(width):
            @task(task_id=f"part_{number:02d}")
            def part():
                raise RuntimeError("down")

            part()
"""


class Receiver:
    """Apprise json:// posts, each with its arrival time."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, dict]] = []
        self.lock = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.posts.append((time.time(), json.loads(body or b"{}")))
                    outer.lock.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/pager"

    def first_page(self, run_id: str, timeout: float = 120) -> float:
        """When the first page about `run_id` arrived (waiting for it)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for arrived, post in self.posts:
                    if run_id in post.get("title", ""):
                        return arrived
                if not self.lock.wait(max(0.0, deadline - time.monotonic())):
                    raise SystemExit(f"no page about {run_id} after {timeout} s")

    def pages(self, run_id: str) -> int:
        with self.lock:
            return sum(run_id in post.get("title", "") for _, post in self.posts)


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "engine", *args], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(done.stderr)
    return done.stdout.strip()


def _first_failure(env: dict[str, str], dag_id: str, run_id: str) -> float:
    from sqlalchemy import create_engine, text

    engine = create_engine(env["DAGWATCH__DATABASE__SQL_ALCHEMY_CONN"])
    with engine.connect() as connection:
        first = connection.execute(
            text("SELECT min(end_date) FROM task_instance WHERE dag_id = :d AND run_id = :r"),
            {"d": dag_id, "r": run_id},
        ).scalar_one()
    engine.dispose()
    if isinstance(first, str):
        first = datetime.fromisoformat(first)
    return first.replace(tzinfo=first.tzinfo or UTC).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--group-wait", type=float, default=5.0)
    options = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="dagwatch-incident-bench-"))
    (home / "dags").mkdir()
    (home / "dags" / "failing.py").write_text(DAGS)
    receiver = Receiver()
    env = {
        **os.environ,
        "DAGWATCH_HOME": str(home),
        "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        "DAGWATCH__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
        "DAGWATCH__CORE__PARALLELISM": "32",
        "DAGWATCH__SCHEDULER__LOOP_INTERVAL": "0.2",
        "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'dagwatch.db'}",
        "DAGWATCH__ALERTS__GROUP_WAIT": str(options.group_wait),
        "DAGWATCH__ALERTS__ROUTES": json.dumps({"pager": {"urls": [receiver.url()]}}),
    }
    _cli(env, "db", "migrate")
    _cli(env, "dags", "reserialize")
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "engine", "scheduler"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    figures: dict[str, list[float]] = {"single": [], "storm": []}
    run_ids: dict[str, list[str]] = {"single": [], "storm": []}
    try:
        time.sleep(3)  # the scheduler starts
        for _ in range(options.rounds):
            for dag_id in ("single", "storm"):
                run_id = _cli(env, "dags", "trigger", dag_id)
                arrived = receiver.first_page(run_id)
                figures[dag_id].append(arrived - _first_failure(env, dag_id, run_id))
                run_ids[dag_id].append(run_id)
                time.sleep(1)
        time.sleep(options.group_wait + 3)  # the last run's updates, if any
    finally:
        scheduler.terminate()
        scheduler.wait(60)
    for dag_id, values in figures.items():
        print(
            f"{dag_id}: failure -> first page median {statistics.median(values):.2f} s "
            f"(min {min(values):.2f}, max {max(values):.2f}); pages per run "
            f"{[receiver.pages(run_id) for run_id in run_ids[dag_id]]}"
        )


if __name__ == "__main__":
    main()
