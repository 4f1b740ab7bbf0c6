"""Scheduler workloads W1, W2, W4 with the local executor on SQLite or PostgreSQL.

Run by hand: `.venv/bin/python bench/scheduler_bench.py [--runs 3] [--workloads w1,w2,w4]
[--db sqlite|postgres|both]`.

`--db postgres` gives each run a fresh PostgreSQL database (created through
`--pg-admin-url`, dropped after); `--db both` alternates SQLite and PostgreSQL runs and
prints the ratio of their medians.

For each workload a fresh `$DAGWATCH_HOME` gets one DAG file; `dagwatch scheduler`
runs in a subprocess, the run is triggered through the engine API once the scheduler
is up, and the figures come from the metastore's attempt records:
  - trigger→success: wall time from the trigger to the run's end_date as the scheduler
    recorded it (the bench polls for the end only every 0.1 s, so its polling neither
    adds to the figure nor takes CPU from the workload);
  - hop: end of a task to the start of the next (chain: each link; fan-out: the first
    task to each of the wide tasks; join: the last wide task to the join);
  - queued→running: queued_at to start_date of each attempt;
  - tasks/s: tasks / (last end - first start);
  - scheduler CPU: user+system seconds of the scheduler process during the run;
  - machine CPU: busy seconds of all cores during the run (workers and attempts
    included), less the CPU of this bench process;
  - CPU by role: the scheduler's process tree from the trigger to 2 s after the end
    (so the last attempt processes have been reaped): the scheduler, the forkserver, the
    executor's template, the workers, and the attempt processes (counted in their worker
    once it reaped them); roles under 0.05 s are not printed;
  - peak PSS: proportional set size summed over the scheduler's process tree (PSS splits
    each shared page among its sharers, so forked processes are not counted as if each
    owned the pages they share, as a sum of RSS would), sampled every 0.5 s. Reading
    smaps_rollup walks page tables (a millisecond or more a process, with dozens of
    processes), so the peak comes from one extra run after the timed ones, whose times
    are not counted;
  - PSS after the run: the same tree 2 s after the run ended, workers still kept;
  - idle PSS: the same tree once the idle workers retired (`core.worker_idle_timeout`,
    set to WORKER_IDLE_TIMEOUT seconds here so a run does not wait a minute for it).
Medians over the runs, with min and max.

`--metrics both` measures the cost of metrics: each run is done twice in a row, with
metrics off and with StatsD (to a UDP socket here), OpenTelemetry (to an OTLP/HTTP sink
here) and Prometheus (scraped here) all on, and the ratio of the medians is printed.
Scrapes and exports happen every `--metrics-interval` seconds (default 15, a common
scrape interval); since their cost is per scrape rather than per task, the time of one
scrape after the run, and its size, are printed too.
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
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

#: `core.worker_idle_timeout` of the benchmarked scheduler (seconds)
WORKER_IDLE_TIMEOUT = 5.0

HEADER = """\
import pendulum
from engine import DAG, task

@task
def noop():
    return None

"""


def _chain(n: int) -> str:
    return (
        "with DAG('bench', schedule=None):\n"
        f"    tasks = [noop.override(task_id=f't{{i:02d}}')() for i in range({n})]\n"
        "    for a, b in zip(tasks, tasks[1:]):\n"
        "        a >> b\n"
    )


def _fan(n: int, join: bool) -> str:
    source = (
        "with DAG('bench', schedule=None, max_active_tasks=10000):\n"
        "    first = noop.override(task_id='first')()\n"
        f"    wide = [noop.override(task_id=f'w{{i:04d}}')() for i in range({n})]\n"
        "    first >> wide\n"
    )
    return source + ("    wide >> noop.override(task_id='last')()\n" if join else "")


WORKLOADS = {
    "w1": ("chain of 20 no-op tasks", _chain(20)),
    "w2": ("1 -> 200 parallel -> 1", _fan(200, join=True)),
    "w4-500": ("1 -> 500 fan-out", _fan(500, join=False)),
    "w4-5000": ("1 -> 5000 fan-out", _fan(5000, join=False)),
}


@dataclass
class Result:
    wall: float
    hops: list[float]
    queue_delays: list[float]
    tasks_per_second: float
    cpu: float
    machine_cpu: float
    peak_pss_mib: float | None
    idle_pss_mib: float
    after_run_pss_mib: float = 0.0
    extra: dict = field(default_factory=dict)


def tree_pss_kib(root: int) -> int:
    """Sum of PSS (from /proc/<pid>/smaps_rollup) over `root` and all its descendants."""
    total = 0
    for pid, _depth in _tree(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent neither idle nor waiting on I/O, since boot."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: [1] ppid, [11] utime,
    [12] stime, [13] cutime, [14] cstime (clock ticks)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> list[tuple[int, int]]:
    """(pid, depth) of `root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat(entry)[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [(root, 0)]
    while todo:
        pid, depth = todo.pop()
        found.append((pid, depth))
        todo.extend((child, depth + 1) for child in children.get(pid, []))
    return found


#: CPU_ROLES[depth]: who runs at that depth of the scheduler's tree (the local executor
#: starts its template from the fork server), and whom they reap
CPU_ROLES = (
    ("scheduler", "exited children of the scheduler"),
    ("forkserver", "exited children of the forkserver"),
    ("executor template", "exited workers"),
    ("workers", "attempt processes"),
)


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds so far by role: each process's own, and that of the children it reaped
    (an attempt process's CPU lands in its worker's once the worker waits for it)."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for pid, depth in _tree(root):
        try:
            fields = _stat(pid)
        except OSError:
            continue
        own, reaped = CPU_ROLES[min(depth, len(CPU_ROLES) - 1)]
        totals[own] = totals.get(own, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
        totals[reaped] = totals.get(reaped, 0.0) + (int(fields[13]) + int(fields[14])) / ticks
    return totals


class PssSampler(threading.Thread):
    interval = 0.5

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.peak = max(self.peak, tree_pss_kib(self.pid))


class MetricsSinks:
    """What the scheduler sends metrics to during a run with metrics on."""

    def __init__(self, interval: float) -> None:
        import socket
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))

        class Sink(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.otlp = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
        threading.Thread(target=self.otlp.serve_forever, daemon=True).start()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.prometheus_port = probe.getsockname()[1]
        probe.close()
        self.interval = interval
        self.scrapes = 0

    def env(self) -> dict[str, str]:
        return {
            "DAGWATCH__METRICS__STATSD_ON": "true",
            "DAGWATCH__METRICS__STATSD_PORT": str(self.udp.getsockname()[1]),
            "DAGWATCH__METRICS__OTEL_ON": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.otlp.server_address[1]}",
            "OTEL_METRIC_EXPORT_INTERVAL": str(int(self.interval * 1000)),
            "DAGWATCH__METRICS__PROMETHEUS_ON": "true",
            "DAGWATCH__METRICS__PROMETHEUS_PORT": str(self.prometheus_port),
        }

    def scrape(self) -> tuple[float, int]:
        """(seconds, lines) of one GET /metrics."""
        import urllib.request

        started = time.perf_counter()
        url = f"http://127.0.0.1:{self.prometheus_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
        return time.perf_counter() - started, body.count(b"\n")

    def scrape_periodically(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.scrape()
                self.scrapes += 1
            except OSError:
                pass

    def close(self) -> None:
        self.udp.close()
        self.otlp.shutdown()


class PgDatabase:
    """A fresh PostgreSQL database for one run, dropped on close."""

    def __init__(self, admin_url: str) -> None:
        import uuid

        import psycopg

        self.admin_url = admin_url
        self.name = f"dagwatch_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        self.url = f"{base}/{self.name}"

    def close(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def one_run(
    workload: str,
    parallelism: int,
    sinks: MetricsSinks | None = None,
    sample_memory: bool = False,
    db_url: str | None = None,
) -> Result:
    from engine import api
    from engine.config import load_config
    from engine.states import DAG_RUN_FINISHED
    from engine.store.db import Store
    from engine.store.migrate import migrate
    from engine.store.models import DagRun, Job, TaskTry

    with tempfile.TemporaryDirectory(prefix="dagwatch-bench-") as home:
        Path(home, "dags").mkdir()
        Path(home, "dags", "bench.py").write_text(HEADER + WORKLOADS[workload][1])
        env = {
            **os.environ,
            "DAGWATCH_HOME": home,
            "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
            "DAGWATCH__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
            "DAGWATCH__CORE__PARALLELISM": str(parallelism),
            "DAGWATCH__CORE__WORKER_IDLE_TIMEOUT": str(WORKER_IDLE_TIMEOUT),
            **(sinks.env() if sinks else {}),
            **({"DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": db_url} if db_url else {}),
        }
        config = load_config(env)
        store = Store.from_config(config)
        migrate(store)
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "engine", "scheduler"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for(lambda: _scheduler_up(store, Job) and _dag_parsed(store), 60)
            sampler = PssSampler(scheduler.pid) if sample_memory else None
            if sampler:
                sampler.start()
            scraping = threading.Event()
            if sinks:
                threading.Thread(
                    target=sinks.scrape_periodically, args=(scraping,), daemon=True
                ).start()
            roles_before = tree_cpu(scheduler.pid)
            cpu_before = cpu_seconds(scheduler.pid)
            machine_before = machine_busy_seconds() - time.process_time()
            started = datetime.now(UTC)
            run = api.trigger_dag(store, "bench", actor="bench", now=started)
            ended: list[datetime] = []

            def finished() -> bool:
                with store.session(readonly=True) as session:
                    state, end_date = session.execute(
                        select(DagRun.state, DagRun.end_date).where(DagRun.run_id == run.run_id)
                    ).one()
                ended.append(end_date)
                return state in DAG_RUN_FINISHED

            _wait_for(finished, 600)
            cpu = cpu_seconds(scheduler.pid) - cpu_before
            machine = machine_busy_seconds() - time.process_time() - machine_before
            wall = (ended[-1] - started).total_seconds()
            scraping.set()
            extra = {"scrape": sinks.scrape()} if sinks else {}
            time.sleep(2)  # let attempt processes exit
            roles = tree_cpu(scheduler.pid)
            extra["cpu_by_role"] = {
                role: seconds - roles_before.get(role, 0.0) for role, seconds in roles.items()
            }
            if sampler:
                sampler.stop.set()
            after_run = tree_pss_kib(scheduler.pid)
            time.sleep(WORKER_IDLE_TIMEOUT)  # idle workers retire
            idle = tree_pss_kib(scheduler.pid)
            with store.session(readonly=True) as session:
                tries = session.execute(select(TaskTry)).scalars().all()
                queued = dict(
                    session.execute(
                        select(DagRun.run_id, DagRun.state).where(DagRun.run_id == run.run_id)
                    ).all()
                )
            assert queued[run.run_id] == "success", queued
            cpu = (cpu, machine)
            result = _figures(
                workload, tries, wall, cpu, sampler.peak if sampler else None, idle, store
            )
            result.extra.update(extra)
            result.after_run_pss_mib = after_run / 1024
            return result
        finally:
            scheduler.send_signal(signal.SIGTERM)
            try:
                scheduler.wait(30)
            except subprocess.TimeoutExpired:
                scheduler.kill()
            store.dispose()


def _figures(workload, tries, wall, cpu, peak, idle, store) -> Result:
    from engine.store.models import TaskInstance

    by_task = {t.task_id: t for t in tries}
    with store.session(readonly=True) as session:
        queued_at = dict(
            session.execute(select(TaskInstance.task_id, TaskInstance.queued_at)).all()
        )
    delays = [(t.start_date - queued_at[t.task_id]).total_seconds() for t in tries]
    if workload == "w1":
        names = sorted(by_task)
        hops = [
            (by_task[b].start_date - by_task[a].end_date).total_seconds()
            for a, b in itertools.pairwise(names)
        ]
    else:
        first_end = by_task["first"].end_date
        wide = [t for name, t in by_task.items() if name.startswith("w")]
        hops = [(t.start_date - first_end).total_seconds() for t in wide]
        if "last" in by_task:
            hops.append(
                (by_task["last"].start_date - max(t.end_date for t in wide)).total_seconds()
            )
    span = (max(t.end_date for t in tries) - min(t.start_date for t in tries)).total_seconds()
    scheduler_cpu, machine_cpu = cpu
    return Result(
        wall,
        hops,
        delays,
        len(tries) / span,
        scheduler_cpu,
        machine_cpu,
        None if peak is None else peak / 1024,
        idle / 1024,
    )


def _scheduler_up(store, job_model) -> bool:
    with store.session(readonly=True) as session:
        return session.execute(select(job_model.id)).first() is not None


def _dag_parsed(store) -> bool:
    from engine.store.models import Dag

    with store.session(readonly=True) as session:
        return session.get(Dag, "bench") is not None


def _wait_for(condition, timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # the metastore may not be ready yet
            pass
        time.sleep(interval)
    raise TimeoutError("benchmark condition not met in time")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def _summary(label: str, values: list[float], unit: str, scale: float = 1.0) -> str:
    scaled = [v * scale for v in values]
    return (
        f"  {label:<24} median {statistics.median(scaled):9.1f} {unit:<5}"
        f" min {min(scaled):9.1f}  max {max(scaled):9.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", default="w1,w2,w4-500,w4-5000")
    parser.add_argument("--parallelism", type=int, default=32)
    parser.add_argument(
        "--metrics",
        choices=("off", "on", "both"),
        default="off",
        help="both: each run with metrics off, then on; prints the ratio of medians",
    )
    parser.add_argument("--metrics-interval", type=float, default=15.0)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument(
        "--pg-admin-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="where each PostgreSQL run's database is created",
    )
    args = parser.parse_args()
    if args.db != "sqlite":
        compare_databases(args)
        return
    for workload in args.workloads.split(","):
        modes = {"off": [False], "on": [True], "both": [False, True]}[args.metrics]
        results: dict[bool, list[Result]] = {mode: [] for mode in modes}
        peaks: dict[bool, float] = {}
        for number in range(args.runs + 1):
            for mode in modes:  # interleaved, so drift of the machine hits both alike
                sinks = MetricsSinks(args.metrics_interval) if mode else None
                memory_run = number == args.runs
                try:
                    result = one_run(workload, args.parallelism, sinks, memory_run)
                finally:
                    if sinks:
                        sinks.close()
                if memory_run:
                    peaks[mode] = result.peak_pss_mib
                else:
                    results[mode].append(result)
        for mode, measured in results.items():
            label = "metrics on" if mode else "metrics off"
            print(f"{workload}: {WORKLOADS[workload][0]} ({args.runs} runs, {label})")
            _print(measured)
            print(f"  {'peak PSS (tree)':<24} {peaks[mode]:9.1f} MiB (one more run, sampled)")
        if len(results) == 2:
            for label, pick in (("trigger->success", "wall"), ("scheduler CPU", "cpu")):
                off = statistics.median(getattr(r, pick) for r in results[False])
                on = statistics.median(getattr(r, pick) for r in results[True])
                print(f"  {label}: metrics on / off = {on / off:.3f}")
            scrapes = [r.extra["scrape"] for r in results[True]]
            print(
                _summary("one scrape after the run", [s for s, _ in scrapes], "ms", 1000)
                + f"  ({scrapes[0][1]} lines)"
            )


def compare_databases(args: argparse.Namespace) -> None:
    """Each workload on the databases of `--db`, runs alternating, metrics off."""
    databases = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    for workload in args.workloads.split(","):
        results: dict[str, list[Result]] = {db: [] for db in databases}
        for _ in range(args.runs):
            for db in databases:  # alternating, so drift of the machine hits both alike
                pg = PgDatabase(args.pg_admin_url) if db == "postgres" else None
                try:
                    results[db].append(
                        one_run(workload, args.parallelism, db_url=pg.url if pg else None)
                    )
                finally:
                    if pg:
                        pg.close()
        for db, measured in results.items():
            print(f"{workload}: {WORKLOADS[workload][0]} ({args.runs} runs, {db})")
            _print(measured)
        if len(results) == 2:
            for label, pick in (("trigger->success", lambda r: r.wall),
                                ("hop median", lambda r: statistics.median(r.hops))):  # fmt: skip
                lite = statistics.median(pick(r) for r in results["sqlite"])
                pg = statistics.median(pick(r) for r in results["postgres"])
                print(f"  {label}: postgres / sqlite = {pg / lite:.2f}")


def _print(results: list[Result]) -> None:
    print(_summary("trigger->success", [r.wall for r in results], "s"))
    print(_summary("hop median", [statistics.median(r.hops) for r in results], "ms", 1000))
    print(_summary("hop p95", [_p95(r.hops) for r in results], "ms", 1000))
    print(
        _summary(
            "queued->running median",
            [statistics.median(r.queue_delays) for r in results],
            "ms",
            1000,
        )
    )
    print(_summary("tasks/s", [r.tasks_per_second for r in results], ""))
    print(_summary("scheduler CPU", [r.cpu for r in results], "s"))
    print(_summary("machine CPU", [r.machine_cpu for r in results], "s"))
    for own, reaped in CPU_ROLES:
        for role in (own, reaped):
            seconds = [r.extra["cpu_by_role"].get(role, 0.0) for r in results]
            if max(seconds) >= 0.05:
                print(_summary(f"  CPU: {role}", seconds, "s"))
    print(_summary("PSS after run (tree)", [r.after_run_pss_mib for r in results], "MiB"))
    print(_summary("idle PSS (tree)", [r.idle_pss_mib for r in results], "MiB"))


if __name__ == "__main__":
    main()
