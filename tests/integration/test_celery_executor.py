"""The celery executor on this machine's real Redis and RabbitMQ, with real `dagwatch
scheduler` and `dagwatch worker` processes and a PostgreSQL metastore.

Each test uses its own database and its own Celery queue names, so tests share nothing
but the brokers' servers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import run_cli
from tests.integration.celery_support import (
    Deployment,
    MetastoreTemplate,
    PrivateRabbitMQ,
    max_overlap,
    wait_until,
)

REDIS = "redis://127.0.0.1:6379/0"
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
BROKERS = [pytest.param(REDIS, id="redis"), pytest.param(RABBITMQ, id="rabbitmq")]
#: tasks of the load test: the brief's 500 (each body a short sleep and one insert)
LOAD_TASKS = 500


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def metastore_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetastoreTemplate]:
    """The migrated metastore every test of this module starts from (a copy each)."""
    template = MetastoreTemplate(tmp_path_factory.mktemp("template_home"))
    try:
        yield template
    finally:
        template.close()


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, metastore_template: MetastoreTemplate
) -> Iterator[Deployment]:
    broker, settings = request.param if isinstance(request.param, tuple) else (request.param, {})
    port = 6379 if broker.startswith("redis") else 5672
    if not _answers(port):
        pytest.fail(f"the broker at 127.0.0.1:{port} does not answer (.ci/run starts it)")
    deployment = Deployment(tmp_path, broker, metastore_template, **settings)
    try:
        yield deployment
    finally:
        deployment.close()


@pytest.mark.parametrize("deployment", BROKERS, indirect=True)
def test_many_tasks_run_once_each_within_the_pool_and_routed_by_queue(deployment: Deployment):
    """Two workers (one also on queue "big"), 500 tasks in a pool of 5 and 10 on "big":
    every body once (the ledger's primary key), never more than 5 in the pool at once,
    and every "big" task on the worker that consumes that queue."""
    d = deployment
    d.write_dag(tasks=LOAD_TASKS, big=10, sleep=0.02)
    d.worker("a", concurrency=4)
    d.worker("b", queues=f"{d.queue},big", concurrency=4)
    d.env.update(DAGWATCH__METRICS__PROMETHEUS_ON="true", DAGWATCH__METRICS__PROMETHEUS_PORT="0")
    d.start("scheduler", "scheduler")
    d.wait_for_workers(["a", "b"])

    run_id = d.trigger()
    assert d.wait_run(run_id, timeout=900) == "success", d.describe()

    # the scheduler's /metrics: each worker's slots per queue, and the attempts' metrics,
    # relayed from the workers; /health: the workers check passes
    url = wait_until(
        lambda: re.search(r"metrics: (http://\S+)/metrics", d.logs["scheduler"].read_text()),
        30,
        "the scheduler's metrics URL",
    ).group(1)

    def value(name: str, **labels: str) -> float:
        text = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
        # only the lines of `name` are parsed: the page holds every attempt's series
        lines = [line for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name]
        return sum(
            sample.value
            for family in text_string_to_metric_families("\n".join(lines) + "\n")
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    # label values keep letters, digits, _ . - (the metrics guard): "b@q1" is "b_q1";
    # the slots are those of the workers' latest heartbeat (every few seconds)
    a_label, b_label = (d.node(name).replace("@", "_") for name in ("a", "b"))
    wait_until(
        lambda: (
            value("dagwatch_executor_worker_open_slots", queue="big", worker=b_label) == 4
            and value("dagwatch_executor_worker_running_slots", queue=d.queue, worker=a_label) == 0
        ),
        30,
        "the idle workers' slots in /metrics",
    )
    assert value("dagwatch_executor_workers") == 2
    # the last attempts' results are read within a second or two of their end
    wait_until(
        lambda: value("dagwatch_ti_finish_total", state="success") == LOAD_TASKS + 10,
        60,
        "every attempt's ti.finish relayed to the scheduler",
    )
    health = json.loads(urllib.request.urlopen(f"{url}/health", timeout=30).read())
    assert health["checks"]["workers"]["ok"]
    assert health["checks"]["workers"]["detail"]["queues"]["big"]["workers"] == 1

    rows = d.sql("SELECT task_id, worker, started, ended FROM ledger")
    pooled = [(s, e) for task_id, _, s, e in rows if task_id.startswith("t")]
    assert len(pooled) == LOAD_TASKS
    assert {task_id for task_id, *_ in rows} == {f"t{i}" for i in range(LOAD_TASKS)} | {
        f"big{i}" for i in range(10)
    }
    assert max_overlap(pooled) <= 5
    assert {worker for task_id, worker, *_ in rows if task_id.startswith("big")} == {"b"}
    assert {worker for task_id, worker, *_ in rows if task_id.startswith("t")} == {"a", "b"}
    tries = d.sql("SELECT max(try_number), count(*) FROM task_instance WHERE state = 'success'")
    assert tries == [(1, LOAD_TASKS + 10)]
    # the workers' heartbeat rows name their queues and slots
    queues = dict(d.sql("SELECT name, queues FROM worker"))
    assert queues == {d.node("a"): d.queue, d.node("b"): f"{d.queue},big"}


@pytest.mark.parametrize(
    "deployment",
    [pytest.param((url, {"scheduler__heartbeat_timeout": 6}), id=name)
     for url, name in ((REDIS, "redis"), (RABBITMQ, "rabbitmq"))],
    indirect=True,
)  # fmt: skip
def test_a_worker_killed_mid_attempt_is_retried_on_the_other(deployment: Deployment):
    """SIGKILL of a worker's whole process group while it runs an attempt: no outcome is
    recorded, the heartbeat stops, the scheduler fails it as a zombie, and the retry
    runs on the other worker; the body completes once."""
    d = deployment
    d.write_dag(tasks=0, long=8.0, retries=1)
    d.worker("a", concurrency=1)
    d.start("scheduler", "scheduler")
    d.wait_for_workers(["a"])
    run_id = d.trigger()
    wait_until(
        lambda: d.sql("SELECT 1 FROM task_instance WHERE task_id = 'long' AND state = 'running'"),
        120,
        "the long attempt to start on worker a",
    )
    d.worker("b", concurrency=1)
    d.wait_for_workers(["b"])
    d.kill_group("a")

    assert d.wait_run(run_id, timeout=240) == "success", d.describe()
    assert d.sql("SELECT task_id, worker FROM ledger") == [("long", "b")]
    ((try_number,),) = d.sql("SELECT try_number FROM task_instance WHERE task_id = 'long'")
    assert try_number == 2
    reasons = d.sql(
        "SELECT reason FROM state_transition WHERE task_id = 'long' AND to_state = 'up_for_retry'"
    )
    assert reasons and "zombie" in reasons[0][0]


@pytest.mark.parametrize(
    "deployment",
    [pytest.param((REDIS, {"scheduler__scheduler_health_check_threshold": 10}), id="redis")],
    indirect=True,
)
def test_two_schedulers_and_two_workers_survive_a_scheduler_killed_mid_run(
    deployment: Deployment,
):
    """Two schedulers share one run on two Celery workers; one scheduler is SIGKILLed while
    attempts it queued are in flight: the other adopts them, the run completes, every body
    ran once and the pool of 5 held across both schedulers."""
    d = deployment
    d.write_dag(tasks=LOAD_TASKS, sleep=0.02)
    d.worker("a", concurrency=4)
    d.worker("b", concurrency=4)
    d.start("victim", "scheduler")
    d.start("survivor", "scheduler")
    d.wait_for_workers(["a", "b"])
    run_id = d.trigger()

    wait_until(lambda: d.sql("SELECT count(*) FROM ledger")[0][0] >= 100, 600, "100 tasks done")
    victim = d.processes["victim"]
    (victim_job,) = d.sql(
        "SELECT id FROM job WHERE job_type = 'scheduler' AND pid = %s", victim.pid
    )[0]
    wait_until(
        lambda: d.sql(
            "SELECT 1 FROM task_instance WHERE queued_by_job_id = %s"
            " AND state IN ('queued', 'running') LIMIT 1",
            victim_job,
        ),
        300,
        "the scheduler to be killed holding attempts",
    )
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)

    assert d.wait_run(run_id, timeout=900) == "success", d.describe()
    # the run may end before the survivor's housekeeping looks at the silent job
    wait_until(
        lambda: d.sql("SELECT state FROM job WHERE id = %s", victim_job) == [("failed",)],
        120,
        "the killed scheduler noticed by its stale heartbeat",
    )
    rows = d.sql("SELECT task_id, worker, started, ended FROM ledger")
    assert sorted(task_id for task_id, *_ in rows) == sorted(f"t{i}" for i in range(LOAD_TASKS))
    assert max_overlap([(started, ended) for _, _, started, ended in rows]) <= 5
    assert {worker for _, worker, *_ in rows} == {"a", "b"}
    queued_by = {job for (job,) in d.sql("SELECT DISTINCT queued_by_job_id FROM task_instance")}
    assert len(queued_by) == 2 and victim_job in queued_by, queued_by  # both queued part


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[dict]:
    """A redis-server of this test's own on a free port, restartable without touching
    the machine's."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (.ci/run installs the Debian package)")
    port = _free_port()
    data = tmp_path / "redis"
    data.mkdir()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", str(data)]  # fmt: skip
    state = {"port": port, "process": None}

    def start() -> None:
        state["process"] = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_until(lambda: _answers(port), 30, "the private redis-server")

    def stop() -> None:
        process = state["process"]
        if process is not None and process.poll() is None:
            process.terminate()  # nothing is saved: the queues are gone
            process.wait(30)

    state.update(start=start, stop=stop)
    start()
    try:
        yield state
    finally:
        stop()


def _queue_five_without_workers(d: Deployment) -> str:
    """A run of 20 tasks in the pool of 5, started with no worker: five attempts queued."""
    d.write_dag(tasks=20, sleep=0.05)
    d.start("scheduler", "scheduler")
    run_id = d.trigger()
    wait_until(
        lambda: d.sql("SELECT count(*) FROM task_instance WHERE state = 'queued'")[0][0] == 5,
        120,
        "five attempts queued (the pool's slots)",
    )
    return run_id


def test_a_redis_restart_loses_no_queued_attempt(
    tmp_path: Path, private_redis: dict, metastore_template: MetastoreTemplate
):
    """Attempts queued while no worker runs, then the broker restarts with its queues lost:
    after celery.requeue_timeout the scheduler sends them again under new message ids,
    the workers run each once, and the run succeeds."""
    url = f"redis://127.0.0.1:{private_redis['port']}/0"
    d = Deployment(tmp_path, url, metastore_template, celery__requeue_timeout=5)
    try:
        d.env["DAGWATCH__CELERY__RESULT_BACKEND"] = f"redis://127.0.0.1:{private_redis['port']}/1"
        run_id = _queue_five_without_workers(d)
        before = dict(
            d.sql("SELECT id, external_executor_id FROM task_instance WHERE state = 'queued'")
        )
        broker = redis.Redis(port=private_redis["port"])
        wait_until(lambda: broker.llen(d.queue) == 5, 60, "the five messages in the broker")
        private_redis["stop"]()
        private_redis["start"]()
        d.worker("a", concurrency=3)
        d.worker("b", concurrency=3)
        assert d.wait_run(run_id, timeout=300) == "success", d.describe()
        assert len(d.sql("SELECT task_id FROM ledger")) == 20
        after = dict(d.sql("SELECT id, external_executor_id FROM task_instance"))
        assert all(after[ti_id] != message for ti_id, message in before.items())
        assert "sending it again" in d.logs["scheduler"].read_text()
        tries = d.sql("SELECT max(try_number) FROM task_instance")
        assert tries == [(1,)]
    finally:
        d.close()


def _amqp_depth(url: str, queue: str) -> int:
    """Messages ready in a RabbitMQ queue (0 while it does not exist)."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=5) as connection:
            _, count, _ = connection.channel().queue_declare(queue, passive=True)
    except Exception:  # not declared yet
        return 0
    return count


@pytest.fixture
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    binary = shutil.which("rabbitmq-server") or shutil.which("rabbitmq-server", path="/usr/sbin")
    if binary is None:
        pytest.fail("rabbitmq-server is not installed (.ci/run installs the Debian package)")
    node = PrivateRabbitMQ(binary, _free_port(), _free_port())
    try:
        node.start(_answers)
        yield node
    finally:
        node.close()


def test_a_rabbitmq_restart_loses_no_queued_attempt(
    tmp_path: Path, private_rabbitmq, metastore_template: MetastoreTemplate
):
    """The same on RabbitMQ: Celery's queues are durable and its messages persistent, so a
    node restarted while attempts are queued still holds them; whatever was sent again
    meanwhile (celery.requeue_timeout) is refused in one of its copies, so each body runs
    once and the run succeeds."""
    url = f"amqp://guest:guest@127.0.0.1:{private_rabbitmq.port}//"
    d = Deployment(tmp_path, url, metastore_template, celery__requeue_timeout=5)
    try:
        run_id = _queue_five_without_workers(d)
        wait_until(lambda: _amqp_depth(url, d.queue) == 5, 60, "the five messages in the broker")
        private_rabbitmq.stop()
        private_rabbitmq.start(_answers)
        d.worker("a", concurrency=3)
        d.worker("b", concurrency=3)
        assert d.wait_run(run_id, timeout=300) == "success", d.describe()
        assert sorted(r[0] for r in d.sql("SELECT task_id FROM ledger")) == sorted(
            f"t{i}" for i in range(20)
        )
        assert d.sql("SELECT max(try_number) FROM task_instance") == [(1,)]
    finally:
        d.close()


@pytest.mark.parametrize(
    "deployment",
    [pytest.param((REDIS, {"scheduler__heartbeat_timeout": 120}), id="redis")],
    indirect=True,
)
def test_a_pool_process_killed_mid_attempt_is_noticed_at_once_and_retried(
    deployment: Deployment,
):
    """SIGKILL of the pool process running an attempt (not of the worker): the worker's main
    process reports it lost (Celery's WorkerLostError, in the result backend), the
    scheduler retries it well before the heartbeat timeout (120 s here), and the retry
    runs in the pool process that replaced it; the body completes once."""
    d = deployment
    d.write_dag(tasks=0, long=8.0, retries=1)
    d.worker("a", concurrency=1)
    d.start("scheduler", "scheduler")
    d.wait_for_workers(["a"])
    run_id = d.trigger()
    ((pid,),) = wait_until(
        lambda: d.sql(
            "SELECT pid FROM task_instance WHERE task_id = 'long' AND state = 'running'"
            " AND pid IS NOT NULL"
        ),
        120,
        "the long attempt to start",
    )
    assert pid != d.processes["a"].pid  # the pool process, not the worker's main process
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    wait_until(
        lambda: d.sql(
            "SELECT 1 FROM state_transition WHERE task_id = 'long' AND to_state = 'up_for_retry'"
        ),
        45,
        "the lost attempt to be retried",
        on_timeout=d.describe,
    )
    noticed = time.monotonic() - killed
    assert d.wait_run(run_id, timeout=240) == "success", d.describe()
    assert d.sql("SELECT task_id, worker FROM ledger") == [("long", "a")]
    ((try_number,),) = d.sql("SELECT try_number FROM task_instance WHERE task_id = 'long'")
    assert try_number == 2
    ((reason,),) = d.sql(
        "SELECT reason FROM state_transition WHERE task_id = 'long' AND to_state = 'up_for_retry'"
    )
    assert "zombie" not in reason and "WorkerLostError" in reason, (reason, noticed)
    assert d.processes["a"].poll() is None  # the worker itself lives on
    # pool processes (the first, its replacement) never close the worker's connections
    assert "worker heartbeat failed" not in d.logs["a"].read_text()


#: a task that starts a long child process, writes both pids to the ledger and waits
HOLDING_DAG = """
import os, subprocess, time
from datetime import datetime
import psycopg
from engine import DAG, task

with DAG("load", schedule=None, start_date=datetime(2024, 1, 1)):
    @task(retries=2)
    def hold():
        child = subprocess.Popen(["sleep", "600"])
        with psycopg.connect(os.environ["LEDGER_DSN"], autocommit=True) as conn:
            for name, pid in (("attempt", os.getpid()), ("child", child.pid)):
                conn.execute(
                    "INSERT INTO ledger (task_id, worker, started) VALUES (%s, %s, %s)",
                    (name, str(pid), time.time()),
                )
        child.wait()
        with psycopg.connect(os.environ["LEDGER_DSN"], autocommit=True) as conn:
            conn.execute("INSERT INTO ledger (task_id, started) VALUES ('finished', 0)")

    hold()
"""


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not reaped, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("deployment", [pytest.param(REDIS, id="redis")], indirect=True)
def test_marking_a_run_failed_stops_its_attempt_on_the_worker(deployment: Deployment):
    """An attempt runs on a Celery worker (its task waits on a child process) when its run
    is marked failed: the attempt is stopped on the worker, the child process it started
    is killed, its try is closed, and the task instance stays failed as marked (no retry,
    although the task has retries left)."""
    d = deployment
    (d.home / "dags" / "load.py").write_text(HOLDING_DAG)
    d.worker("a", concurrency=1)
    d.start("scheduler", "scheduler")
    d.wait_for_workers(["a"])
    run_id = d.trigger()

    def started() -> dict[str, int] | None:
        rows = dict(d.sql("SELECT task_id, worker FROM ledger"))
        return {k: int(rows[k]) for k in ("attempt", "child")} if len(rows) == 2 else None

    pids = wait_until(
        started,
        120,
        "the attempt to start its child process",
        on_timeout=d.describe,
    )
    assert _alive(pids["child"]) and _alive(pids["attempt"])

    marked = run_cli("dags", "mark-run", "load", run_id, "--state", "failed", "--yes", env=d.env)
    assert marked.returncode == 0, marked.stderr

    wait_until(lambda: not _alive(pids["child"]), 60, "the child process to be killed")
    ((state, error),) = wait_until(
        lambda: d.sql(
            "SELECT state, error FROM task_try WHERE try_number = 1 AND end_date IS NOT NULL"
        ),
        60,
        "the attempt's try to be closed",
        on_timeout=d.describe,
    )
    assert state == "failed" and "set to failed" in (error or ""), (state, error)
    time.sleep(3)  # a retry, were one wrongly queued, would show by now
    assert d.sql("SELECT state, try_number FROM task_instance") == [("failed", 1)]
    assert d.run_state(run_id) == "failed"
    assert "finished" not in dict(d.sql("SELECT task_id, worker FROM ledger"))
    assert d.sql("SELECT count(*) FROM task_try") == [(1,)]
    assert d.processes["a"].poll() is None  # the worker goes on serving
