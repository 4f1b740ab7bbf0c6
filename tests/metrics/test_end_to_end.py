"""A real `dagwatch scheduler` runs a DAG with all three backends on: a StatsD socket, an
OTLP receiver and a scrape of its own /metrics all see the same attempts, including
those of attempt processes (relayed) and a task's custom metric."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time

import pytest

from engine import api
from engine.parsing.parser import process_folders
from engine.store import runs
from tests.helpers import run_cli, start_cli
from tests.metrics.conftest import OtlpReceiver, UdpReceiver, http_get, labels, scrape

DAG_FILE = """
import time
from datetime import timedelta
from engine import DAG, task
from metrics import stats

with DAG("observed", schedule=None):
    @task
    def extract():
        stats.incr("custom.rows_loaded", 5, tags={"team": "data"})

    @task
    def nap():
        time.sleep(0.2)

    @task(retries=1, retry_delay=timedelta(0))
    def flaky():
        raise RuntimeError("boom")

    extract() >> nap() >> flaky()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout:g} s")


def _run_state(store, run_id: str) -> str:
    with store.session() as session:
        return runs.get_dag_run(session, "observed", run_id).state


@pytest.fixture
def observed(store, environ, udp: UdpReceiver, otlp: OtlpReceiver):
    """The DAG parsed into `store`, and the environment of a scheduler on every backend."""
    from engine import runtime

    config = runtime.get_config().with_overrides(
        core__load_examples=False, core__dags_are_paused_at_creation=False
    )
    folder = config["core.dags_folder"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "observed.py").write_text(textwrap.dedent(DAG_FILE))
    assert process_folders(store, config).import_errors == 0
    port = _free_port()
    env = {
        **environ,
        "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        "DAGWATCH__SCHEDULER__LOOP_INTERVAL": "0.2",
        "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": store.engine.url.render_as_string(False),
        "DAGWATCH__METRICS__STATSD_ON": "true",
        "DAGWATCH__METRICS__STATSD_PORT": str(udp.port),
        "DAGWATCH__METRICS__OTEL_ON": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_SERVICE_NAME": "dagwatch-e2e",
        "DAGWATCH__METRICS__PROMETHEUS_ON": "true",
        "DAGWATCH__METRICS__PROMETHEUS_PORT": str(port),
    }
    return env, f"http://127.0.0.1:{port}"


def test_one_run_reaches_statsd_otel_and_prometheus(store, observed, udp, otlp) -> None:
    env, url = observed
    run_id = api.trigger_dag(store, "observed", actor="test").run_id
    scheduler = start_cli(
        "scheduler",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    try:
        _wait(lambda: _run_state(store, run_id) == "failed", what="the run failing")
        health = _wait(lambda: http_get(f"{url}/health")[0] == 200, what="healthy", timeout=15)
        assert health
        body = json.loads(http_get(f"{url}/health")[2])
        assert {"scheduler", "metastore", "dag_processor", "executor"} <= set(body["checks"])
        samples = _wait(
            lambda: (s := scrape(url)).get("dagwatch_dagrun_duration_failed_seconds_count") and s,
            what="the run's duration in the scrape",
        )
        finish = samples["dagwatch_ti_finish_total"]
        assert finish[labels(dag_id="observed", task_id="extract", state="success")] == 1
        assert finish[labels(dag_id="observed", task_id="flaky", state="up_for_retry")] == 1
        assert finish[labels(dag_id="observed", task_id="flaky", state="failed")] == 1
        assert samples["dagwatch_ti_failures_total"] == {
            labels(dag_id="observed", task_id="flaky"): 2
        }
        assert samples["dagwatch_ti_retries_total"] == {
            labels(dag_id="observed", task_id="flaky"): 1
        }
        assert samples["dagwatch_operator_failures_total"] == {
            labels(operator="_PythonDecoratedOperator"): 2  # Airflow's task_type of @task
        }
        assert samples["dagwatch_custom_rows_loaded_total"] == {labels(team="data"): 5}
        assert (
            samples["dagwatch_task_queued_duration_seconds_count"][
                labels(dag_id="observed", task_id="flaky", pool="default_pool")
            ]
            == 2
        )
        assert samples["dagwatch_dagrun_duration_failed_seconds_count"] == {
            labels(dag_id="observed"): 1
        }
        assert samples["dagwatch_pool_open_slots"][labels(pool="default_pool")] == 128
        assert samples["dagwatch_dagbag_size"] == {(): 1}
        assert samples["dagwatch_scheduler_heartbeat_total"][()] >= 1
        _promtool_accepts(http_get(f"{url}/metrics")[2])
        time.sleep(max(0.0, started + 7 - time.monotonic()))  # a push of metastore gauges
    finally:
        scheduler.send_signal(signal.SIGTERM)
        out, err = scheduler.communicate(timeout=60)
    assert scheduler.returncode == 0, out + err
    assert f"metrics: {url}/metrics" in out

    lines = _everything_received(udp)
    assert "dagwatch.ti.finish.observed.flaky.failed:1|c" in lines
    assert lines.count("dagwatch.ti_failures:1|c") == 2  # Airflow's name has no labels
    assert any(
        line.startswith("dagwatch.dag.observed.flaky.duration:") and line.endswith("|ms")
        for line in lines
    )
    assert "dagwatch.custom.rows_loaded.data:5|c" in lines  # tag values join the name
    (nap,) = [line for line in lines if line.startswith("dagwatch.dag.observed.nap.duration:")]
    assert nap.endswith("|ms") and 200 <= float(nap.split(":")[1].split("|")[0]) < 2000
    assert "dagwatch.pool.running_slots.default_pool:0|g" in lines  # pushed from the metastore
    assert "dagwatch.dagbag_size:1|g" in lines

    points = otlp.wait_for("dagwatch.ti.finish")
    flaky = [p for p in points if p.attributes.get("task_id") == "flaky"]
    assert {p.attributes["state"] for p in flaky} == {"up_for_retry", "failed"}
    assert all(p.resource.get("service.name") == "dagwatch-e2e" for p in points)
    rows = [p for p in otlp.points() if p.name == "dagwatch.custom.rows_loaded"]
    assert rows and rows[-1].value == 5
    naps = [
        p
        for p in otlp.points()
        if p.name == "dagwatch.task.duration" and p.attributes.get("task_id") == "nap"
    ]
    assert naps[-1].kind == "histogram" and naps[-1].count == 1 and 0.2 <= naps[-1].value < 2


def _everything_received(udp: UdpReceiver) -> list[str]:
    """Every line the scheduler sent before it stopped."""
    udp.sock.settimeout(0.2)
    lines: list[str] = []
    try:
        while True:
            lines += udp.sock.recvfrom(65535)[0].decode().split("\n")
    except TimeoutError:
        return lines


def _promtool_accepts(body: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "promtool is not on PATH (Debian package: prometheus)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        print(reason)
        return
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_taken_port_is_one_line_and_exit_1(store, observed) -> None:
    env, _ = observed
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**env, "DAGWATCH__METRICS__PROMETHEUS_PORT": str(port)}
        result = run_cli("scheduler", "--drain", env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: cannot serve /metrics on 127.0.0.1:{port} (metrics.prometheus_host, "
        "metrics.prometheus_port): Address already in use"
    ]
