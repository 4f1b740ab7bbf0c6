"""SLA miss latency: from the deadline to the miss recorded, and to the page at a receiver.

Run by hand: `.venv/bin/python bench/alert_latency.py [--runs 5] [--url URL]`.
Each run starts a real `dagwatch scheduler` (local executor) on a fresh home, then
triggers (`dagwatch dags trigger`) one DAG whose task sleeps 4 s past a 1 s SLA; a route
pages `sla_missed` and the DAG's `sla_miss_callback` is an `AppriseNotifier`, both to an
HTTP receiver on loopback.
Reported, median and spread over the runs (seconds after the deadline):
- recorded: `sla_miss.detected_at`;
- alert written: the route's outbox row (`alert.created_at`);
- routed page: the receiver got the route's POST;
- callback page: the receiver got the notifier's POST;
- warned: `deadline_at_risk` written, before the deadline (negative: ahead), for a
  second DAG whose task (4 recorded runs of 0.5 s) overruns towards a 6 s deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DAG_FILE = """\
import time
from datetime import timedelta
from alerts import AppriseNotifier
from engine import DAG, task, Deadline, DeadlineReference

with DAG("late", schedule=None, sla_miss_callback=AppriseNotifier(urls="env:CALLBACK_URL")):
    @task(sla=timedelta(seconds=1))
    def load():
        time.sleep(4)

    load()

with DAG("overrun", schedule=None,
         deadline=Deadline(DeadlineReference.DAGRUN_QUEUED_AT, timedelta(seconds=6))):
    @task
    def work():
        time.sleep(float(open(__file__ + ".seconds").read()))

    work()
"""


class Receiver:
    """A loopback HTTP server noting when each POST arrived, by path."""

    def __init__(self) -> None:
        arrivals: dict[str, list[datetime]] = {}
        self.arrivals = arrivals

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = datetime.now(UTC)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrivals.setdefault(self.path, []).append(at)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/{path}"


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "engine", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"dagwatch {' '.join(args)}: {done.stderr or done.stdout}")
    return done.stdout


def one_run(
    url: str | None, log_path: str | None = None, group_wait: float | None = None
) -> dict[str, float]:
    receiver = Receiver()
    with tempfile.TemporaryDirectory(prefix="dagwatch-bench-") as home:
        dags = Path(home, "dags")
        dags.mkdir()
        (dags / "late.py").write_text(DAG_FILE)
        seconds = dags / "late.py.seconds"
        seconds.write_text("0.5")
        routes = {
            "pager": {"urls": [receiver.url("route")], "events": ["sla_missed"], "dags": ["late"]},
            "early": {
                "urls": [receiver.url("early")],
                "events": ["deadline_at_risk"],
                "dags": ["overrun"],
            },
        }
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),  # to measure another checkout
            "HOME": os.environ.get("HOME", home),
            "DAGWATCH_HOME": home,
            "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
            "DAGWATCH__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
            "DAGWATCH__CORE__EXECUTOR": "local",
            "DAGWATCH__ALERTS__ROUTES": json.dumps(routes),
            "CALLBACK_URL": receiver.url("callback"),
        }
        if group_wait is not None:  # the routes' incident wait (default alerts.group_wait)
            env["DAGWATCH__ALERTS__GROUP_WAIT"] = str(group_wait)
        if url:
            env["DAGWATCH__DATABASE__SQL_ALCHEMY_CONN"] = url
            cli(env, "db", "reset", "--yes")
        cli(env, "db", "migrate")
        cli(env, "dags", "reserialize")
        log = open(log_path, "a") if log_path else subprocess.DEVNULL
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "engine", "scheduler"], env=env, stdout=log, stderr=log
        )
        try:
            store = open_store(env)
            wait_for(lambda: scheduler_running(store), "the scheduler")
            for _ in range(4):  # the overrunning DAG's history: 0.5 s runs
                run_id = trigger(env, "overrun")
                wait_for(lambda run_id=run_id: run_over(store, "overrun", run_id), "a 0.5 s run")
            seconds.write_text("8")
            late, overrun = trigger(env, "late"), trigger(env, "overrun")
            wait_for(lambda: run_over(store, "late", late), "the late run")
            wait_for(lambda: run_over(store, "overrun", overrun), "the overrunning run")
            wait_for(lambda: {"/route", "/callback"} <= set(receiver.arrivals), "the pages")
            figures = read_figures(store, overrun)
            store.dispose()
        finally:
            scheduler.terminate()
            scheduler.wait(60)
            if log_path:
                log.close()  # type: ignore[union-attr]
    receiver.server.shutdown()
    deadline = figures.pop("deadline")
    routed = receiver.arrivals["/route"][0]
    callback = receiver.arrivals["/callback"][0]
    return {
        **figures,
        "routed page": (routed - deadline).total_seconds(),
        "callback page": (callback - deadline).total_seconds(),
    }


def open_store(env: dict[str, str]) -> Any:
    from engine.config import load_config
    from engine.store.db import Store

    return Store.from_config(load_config(env))


def trigger(env: dict[str, str], dag_id: str) -> str:
    return json.loads(cli(env, "dags", "trigger", dag_id, "--output", "json"))["run_id"]


def wait_for(condition: Any, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


def scheduler_running(store: Any) -> bool:
    from sqlalchemy import select

    from engine.store.models import Job

    with store.session() as session:
        return session.scalar(select(Job.id).where(Job.state == "running")) is not None


def run_over(store: Any, dag_id: str, run_id: str) -> bool:
    from sqlalchemy import select

    from engine.store.models import DagRun

    with store.session() as session:
        state = session.scalar(
            select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        )
    return state in ("success", "failed")


def read_figures(store: Any, overrun: str) -> dict[str, Any]:
    from sqlalchemy import select

    from engine.store.models import Alert, SlaMiss

    with store.session() as session:
        miss = session.scalars(select(SlaMiss).where(SlaMiss.dag_id == "late")).one()
        over = session.scalars(
            select(SlaMiss).where(SlaMiss.dag_id == "overrun", SlaMiss.run_id == overrun)
        ).first()
        warned = session.scalar(
            select(Alert.created_at).where(
                Alert.event == "deadline_at_risk",
                Alert.dag_id == "overrun",
                Alert.run_id == overrun,
            )
        )
        sent = session.execute(
            select(Alert.created_at, Alert.sent_at).where(
                Alert.event == "sla_missed", Alert.dag_id == "late", Alert.route == "pager"
            )
        ).one()
        result = {
            "deadline": miss.deadline,
            "alert written": (sent.created_at - miss.deadline).total_seconds(),
            "recorded": (miss.detected_at - miss.deadline).total_seconds(),
            "warned": (warned - over.deadline).total_seconds() if warned and over else float("nan"),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--url", help="a PostgreSQL metastore URL (default: SQLite)")
    parser.add_argument("--log", help="append the schedulers' output to this file")
    parser.add_argument(
        "--group-wait", type=float, help="alerts.group_wait in seconds (default: the config's)"
    )
    args = parser.parse_args()
    print(f"{socket.gethostname()}: {os.cpu_count()} CPUs, {args.runs} runs")
    runs = []
    for i in range(args.runs):
        started = time.monotonic()
        figures = one_run(args.url, args.log, args.group_wait)
        runs.append(figures)
        shown = ", ".join(f"{k} {v:+.2f} s" for k, v in figures.items())
        print(f"run {i + 1}: {shown} ({time.monotonic() - started:.0f} s)")
    for key in runs[0]:
        values = [run[key] for run in runs]
        print(
            f"{key:>14}: median {statistics.median(values):+.2f} s after the deadline"
            f" (min {min(values):+.2f}, max {max(values):+.2f})"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
