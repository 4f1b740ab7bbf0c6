"""A deployment of real processes for the celery executor tests: a fresh PostgreSQL
metastore, one `dagwatch scheduler`, `dagwatch worker` processes, a ledger table the task
bodies write to (a primary key, so a body that ran twice fails loudly)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.helpers import create_pg_database, drop_pg_database, run_cli, start_cli

#: the DAG file: `tasks` tasks in pool `p5`, `big` more routed to queue "big"; each body
#: sleeps `sleep` s (or `long` s for task "long") and then writes its ledger row
DAG_FILE = """
import os, time
from datetime import datetime, timedelta
import psycopg
from engine import DAG, task

SPEC = {spec!r}

def record(ctx_task_id, started, worker):
    with psycopg.connect(os.environ["LEDGER_DSN"], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ledger (task_id, worker, started, ended) VALUES (%s, %s, %s, %s)",
            (ctx_task_id, worker, started, time.time()),
        )

with DAG("load", schedule=None, start_date=datetime(2024, 1, 1), max_active_tasks=64,
         default_args={{"retries": SPEC["retries"], "retry_delay": timedelta(seconds=0)}}) as dag:
    @task(pool="p5")
    def work(name):
        started = time.time()
        time.sleep(SPEC["long"] if name == "long" else SPEC["sleep"])
        record(name, started, os.environ.get("TEST_WORKER", "?"))

    for i in range(SPEC["tasks"]):
        work.override(task_id=f"t{{i}}")(f"t{{i}}")
    for i in range(SPEC["big"]):
        work.override(task_id=f"big{{i}}", queue="big", pool="default_pool")(f"big{{i}}")
    if SPEC["long"]:
        work.override(task_id="long", pool="default_pool")("long")
"""


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


class MetastoreTemplate:
    """A database migrated once by `dagwatch db migrate`, with pool `p5` set by `dagwatch
    pools set` and the empty ledger table; each deployment gets a copy of it (`CREATE
    DATABASE ... TEMPLATE`), the same as migrating its own at a fraction of the cost."""

    def __init__(self, tmp: Path) -> None:
        self.url = create_pg_database("dagwatch_celery_template")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", str(tmp)),
            "DAGWATCH_HOME": str(tmp),
            "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": self.url,
            "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        }
        try:
            migrated = run_cli("db", "migrate", env=env)
            assert migrated.returncode == 0, migrated.stderr
            with psycopg.connect(libpq(self.url), autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE ledger (task_id text PRIMARY KEY, worker text, "
                    "started double precision, ended double precision)"
                )
            pool = run_cli("pools", "set", "p5", "5", env=env)
            assert pool.returncode == 0, pool.stderr
        except BaseException:
            drop_pg_database(self.url)
            raise

    def copy(self) -> str:
        """A new database holding what the template holds; its SQLAlchemy URL."""
        return create_pg_database("dagwatch_celery", template=self.url.rsplit("/", 1)[1])

    def close(self) -> None:
        drop_pg_database(self.url)


class Deployment:
    """Processes of one test; `close()` stops them and drops the database."""

    def __init__(
        self, tmp: Path, broker_url: str, template: MetastoreTemplate, **settings: Any
    ) -> None:
        self.tmp = tmp
        self.url = template.copy()
        self.queue = f"q{secrets.token_hex(4)}"  # unique per test: tests do not share messages
        self.home = tmp / "home"
        (self.home / "dags").mkdir(parents=True)
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", str(tmp)),
            "USER": "dagwatch-test",
            "DAGWATCH_HOME": str(self.home),
            "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": self.url,
            "DAGWATCH__CORE__EXECUTOR": "celery",
            "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
            "DAGWATCH__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
            "DAGWATCH__CELERY__BROKER_URL": broker_url,
            "DAGWATCH__CELERY__RESULT_BACKEND": "redis://127.0.0.1:6379/1",
            "DAGWATCH__CELERY__DEFAULT_QUEUE": self.queue,
            "DAGWATCH__LOGGING__LEVEL": "INFO",
            "LEDGER_DSN": libpq(self.url),
        }
        for key, value in settings.items():
            self.env[f"DAGWATCH__{key.upper()}"] = str(value)
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def write_dag(self, *, tasks: int, big: int = 0, sleep: float = 0.0, long: float = 0.0,
                  retries: int = 0) -> None:  # fmt: skip
        spec = {"tasks": tasks, "big": big, "sleep": sleep, "long": long, "retries": retries}
        text = textwrap.dedent(DAG_FILE).format(spec=spec)
        (self.home / "dags" / "load.py").write_text(text)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = self.tmp / f"{name}.log"
        self.logs[name] = log
        with log.open("w") as out:
            self.processes[name] = start_cli(
                *args,
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a SIGKILL takes its pool too
            )

    def node(self, name: str) -> str:
        """The Celery node name of worker `name`: unique to this deployment, since tests
        running side by side share the broker (a node name owns a queue of its own)."""
        return f"{name}@{self.queue}"

    def worker(self, name: str, *, queues: str | None = None, concurrency: int = 3) -> None:
        args = ["worker", "--concurrency", str(concurrency), "--name", self.node(name)]
        args += ["--queues", queues] if queues else []
        self.start(name, *args, env={"TEST_WORKER": name})

    def wait_for_workers(self, names: list[str], timeout: float = 120) -> None:
        wanted = {self.node(name) for name in names}
        wait_until(lambda: wanted <= self.live_worker_names(), timeout, "workers ready")
        ready = lambda: all("ready." in self.logs[n].read_text() for n in names)  # noqa: E731
        wait_until(ready, timeout, "workers consuming")

    def live_worker_names(self) -> set[str]:
        rows = self.sql("SELECT name FROM worker WHERE state = 'running'")
        return {row[0] for row in rows}

    def sql(self, statement: str, *params: Any) -> list[tuple]:
        with psycopg.connect(libpq(self.url), autocommit=True) as conn:
            return list(conn.execute(statement, params or None).fetchall())

    def trigger(self) -> str:
        wait_until(lambda: self.sql("SELECT 1 FROM dag WHERE dag_id = 'load'"), 180, "DAG parsed")
        result = run_cli("dags", "trigger", "load", "--output", "json", env=self.env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["run_id"]

    def run_state(self, run_id: str) -> str:
        rows = self.sql("SELECT state FROM dag_run WHERE run_id = %s", run_id)
        return rows[0][0] if rows else ""

    def wait_run(self, run_id: str, timeout: float) -> str:
        wait_until(
            lambda: self.run_state(run_id) in ("success", "failed"),
            timeout,
            f"run {run_id} to end",
            on_timeout=self.describe,
        )
        return self.run_state(run_id)

    def describe(self) -> str:
        states = self.sql("SELECT state, count(*) FROM task_instance GROUP BY state")
        tails = {n: log.read_text()[-3000:] for n, log in self.logs.items()}
        return f"task instances: {states}\n" + "\n".join(
            f"--- {n} ---\n{t}" for n, t in tails.items()
        )

    def kill_group(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes[name]
        os.killpg(process.pid, sig)
        process.wait(30)

    def stop(self, *names: str) -> None:
        """SIGTERM the named processes at once, then wait for each (30 s at most)."""
        stopping = []
        for name in names:
            process = self.processes.pop(name, None)
            if process is not None and process.poll() is None:
                process.terminate()
                stopping.append(process)
        for process in stopping:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            # a warm shutdown leaves nothing; a group kill ends what a stuck pool left
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        self.stop(*self.processes)
        drop_pg_database(self.url)


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll `condition` until it is truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{detail}")


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end before a start at the same time)."""
    points = [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals]
    points.sort(key=lambda p: (p[0], p[1]))
    most = current = 0
    for _, step in points:
        current += step
        most = max(most, current)
    return most


class PrivateRabbitMQ:
    """A rabbitmq-server node of one test: its own node name, ports and data directory
    (world-readable: the Debian script runs the node as the rabbitmq user), stopped and
    started again without touching the machine's node."""

    def __init__(self, binary: str, port: int, dist_port: int) -> None:
        self.binary, self.port = binary, port
        self.node = f"dwtest{secrets.token_hex(4)}@localhost"
        self.base = Path(tempfile.mkdtemp(prefix="dagwatch-rabbitmq-"))
        self.base.chmod(0o777)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{port}\n")
        for path in self.base.iterdir():
            path.chmod(0o644)
        self.env = {
            **os.environ,
            "HOME": str(self.base),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),
        }
        self.process: subprocess.Popen | None = None

    def start(self, answers: Callable[[int], bool]) -> None:
        self.process = subprocess.Popen(
            [self.binary], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_until(lambda: answers(self.port), 120, f"the private RabbitMQ node {self.node}")

    def _node_pids(self) -> list[int]:
        """The Erlang VM of this node (found by its unique node name)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if command and command[0].endswith(b"beam.smp") and self.node.encode() in command:
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        """Stop the node (SIGTERM: a clean shutdown that keeps durable queues)."""
        pids = self._node_pids()
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not self._node_pids(), 120, f"{self.node} to stop")
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(30)
            self.process = None

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
