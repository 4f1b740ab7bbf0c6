"""Prometheus: real HTTP scrapes of /metrics and /health, sources, multiprocess mode."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from metrics import CATALOG, Sample, Stats
from metrics.guard import Guard
from metrics.prometheus import PrometheusBackend
from tests.metrics.conftest import http_get, labels, scrape

DT = {"dag_id": "etl", "task_id": "load"}


@pytest.fixture
def backend() -> Iterator[PrometheusBackend]:
    prometheus = PrometheusBackend(CollectorRegistry())
    prometheus.serve("127.0.0.1", 0)
    yield prometheus
    prometheus.close()


@pytest.fixture
def stats(backend: PrometheusBackend) -> Stats:
    return Stats([backend], strict=True)


def families(url: str) -> dict[str, str]:
    """{family name: type} from a real GET /metrics."""
    body = http_get(f"{url}/metrics")[2]
    return {family.name: family.type for family in text_string_to_metric_families(body)}


def test_a_scrape_holds_the_catalog_families_with_their_labels(
    stats: Stats, backend: PrometheusBackend
) -> None:
    stats.incr("ti.finish", tags={**DT, "state": "success"})
    stats.incr("ti.finish", tags={**DT, "state": "success"})
    stats.gauge("pool.open_slots", 5, tags={"pool": "default_pool"})
    stats.timing("task.duration", 42.0, tags=DT)
    stats.incr("custom.rows_loaded", 3, tags={"team": "data"})
    url = backend.server.url
    samples = scrape(url)
    assert samples["dagwatch_ti_finish_total"] == {labels(**DT, state="success"): 2.0}
    assert not [name for name in samples if name.endswith("_created")]  # a series per child
    assert samples["dagwatch_pool_open_slots"] == {labels(pool="default_pool"): 5.0}
    assert samples["dagwatch_task_duration_seconds_count"] == {labels(**DT): 1.0}
    assert samples["dagwatch_task_duration_seconds_sum"] == {labels(**DT): 42.0}
    assert samples["dagwatch_task_duration_seconds_bucket"][labels(**DT, le="60.0")] == 1.0
    assert samples["dagwatch_task_duration_seconds_bucket"][labels(**DT, le="30.0")] == 0.0
    assert samples["dagwatch_custom_rows_loaded_total"] == {labels(team="data"): 3.0}
    types = families(url)
    assert types["dagwatch_ti_finish"] == "counter"
    assert types["dagwatch_task_duration_seconds"] == "histogram"
    assert types["dagwatch_scheduler_heartbeat"] == "counter"  # unlabelled: always present


def test_odd_dag_ids_are_sanitised_and_capped_and_overflow_folds(
    backend: PrometheusBackend,
) -> None:
    stats = Stats([backend], strict=True, guard=Guard(max_series=2))
    stats.incr("ti.start", tags={"dag_id": 'sales "eu"\n' + "x" * 300, "task_id": "t/1"})
    for dag in ("b", "c", "d"):
        stats.incr("ti.start", tags={"dag_id": dag, "task_id": "t"})
    series = scrape(backend.server.url)["dagwatch_ti_start_total"]
    dag_ids = sorted(dict(key)["dag_id"] for key in series)
    assert dag_ids[0] == "__overflow__" and dag_ids[1] == "b"
    assert dag_ids[2].startswith("sales__eu__x") and len(dag_ids[2]) == 100
    assert series[labels(dag_id="__overflow__", task_id="__overflow__")] == 2.0


def test_sources_are_read_at_scrape_time_and_win_over_pushed_values(
    stats: Stats, backend: PrometheusBackend
) -> None:
    stats.gauge("pool.open_slots", 99, tags={"pool": "stale"})
    slots = {"default_pool": 128.0}

    def metastore() -> list[Sample]:
        return [
            *(Sample("pool.open_slots", v, {"pool": p}) for p, v in slots.items()),
            Sample("task_instances", 3, {"state": "running"}),
            Sample("task_instances", 2, {"state": "queued"}),
            Sample("import_errors", 1, {"file": "broken_dag.py"}),
        ]

    def broken() -> list[Sample]:
        raise RuntimeError("metastore unreachable")

    backend.add_source(broken)
    backend.add_source(metastore)
    samples = scrape(backend.server.url)
    assert samples["dagwatch_pool_open_slots"] == {labels(pool="default_pool"): 128.0}
    assert samples["dagwatch_task_instances"] == {
        labels(state="queued"): 2.0,
        labels(state="running"): 3.0,
    }
    assert samples["dagwatch_import_errors"] == {labels(file="broken_dag.py"): 1.0}
    slots["default_pool"] = 100.0
    assert scrape(backend.server.url)["dagwatch_pool_open_slots"] == {
        labels(pool="default_pool"): 100.0
    }


def test_health_is_200_when_every_check_passes_and_503_otherwise(
    backend: PrometheusBackend,
) -> None:
    server = backend.server
    state = {"scheduler": True}
    server.add_health_check("metastore", lambda: (True, {"latency_ms": 3}))
    server.add_health_check(
        "scheduler", lambda: (state["scheduler"], {"last_heartbeat_seconds_ago": 1.5})
    )
    status, content_type, body = http_get(f"{server.url}/health")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {
        "status": "healthy",
        "checks": {
            "metastore": {"ok": True, "detail": {"latency_ms": 3}},
            "scheduler": {"ok": True, "detail": {"last_heartbeat_seconds_ago": 1.5}},
        },
    }
    state["scheduler"] = False
    server.add_health_check("raises", lambda: 1 / 0)
    status, _, body = http_get(f"{server.url}/health")
    assert status == 503
    document = json.loads(body)
    assert document["status"] == "unhealthy"
    assert document["checks"]["scheduler"]["ok"] is False
    assert document["checks"]["metastore"]["ok"] is True
    assert document["checks"]["raises"] == {
        "ok": False,
        "detail": {"error": "ZeroDivisionError: division by zero"},
    }
    assert http_get(f"{server.url}/nope")[0] == 404


def test_a_forked_child_can_close_without_touching_the_parents_server(
    stats: Stats, backend: PrometheusBackend
) -> None:
    url = backend.server.url
    with warnings.catch_warnings():  # Python 3.12+ warns on fork with threads running
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            stats.close()  # would wait forever for the parent's serving thread if it tried
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("closing in the child hung")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert http_get(f"{url}/metrics")[0] == 200


def test_the_registry_is_injected_and_collisions_fail_loudly() -> None:
    with pytest.raises(ValueError, match="not the global one"):
        PrometheusBackend(prometheus_client.REGISTRY)
    registry = CollectorRegistry()
    PrometheusBackend(registry)
    with pytest.raises(ValueError, match=r"Duplicated timeseries.*dagwatch_"):
        PrometheusBackend(registry)


def test_a_scrape_passes_promtool_check_metrics(stats: Stats, backend: PrometheusBackend) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "promtool is not on PATH (Debian package: prometheus)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        print(reason)
        pytest.skip(reason)
    for metric in CATALOG:  # every family the catalog declares, with every label
        tags = {label: "x" for label in metric.labels}
        if metric.type == "counter":
            stats.incr(metric.name, tags=tags)
        elif metric.type == "gauge":
            stats.gauge(metric.name, -5, tags=tags)
        else:
            stats.timing(metric.name, 1.0, tags=tags)
    stats.incr("custom.rows_loaded", tags={"team": "data"})
    body = http_get(f"{backend.server.url}/metrics")[2]
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_worker_values_reach_the_scrape_in_multiprocess_mode(tmp_path: Path) -> None:
    script = Path(__file__).with_name("multiproc_scheduler.py")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"\0" * 8)  # a previous run's leftovers
    with subprocess.Popen(
        [sys.executable, str(script), str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as scheduler:
        assert scheduler.stdin is not None and scheduler.stdout is not None
        port, child = _line(scheduler).split()
        url = f"http://127.0.0.1:{port}"
        samples = scrape(url)
        assert samples["dagwatch_ti_start_total"] == {
            labels(dag_id="parent", task_id="t"): 2.0,
            labels(dag_id="child", task_id="t"): 1.0,
        }
        assert samples["dagwatch_task_duration_seconds_count"] == {
            labels(dag_id="child", task_id="t"): 1.0
        }
        assert samples["dagwatch_executor_running_tasks"] == {(): 5.0}  # livesum: 3 + 2
        assert samples["dagwatch_pool_open_slots"] == {labels(pool="default_pool"): 1.0}
        assert samples["dagwatch_custom_rows_loaded_total"] == {labels(team="data"): 5.0}
        assert not (directory / "counter_999999.db").exists()
        assert (directory / f"counter_{child}.db").exists()
        scheduler.stdin.write("dead\n")
        scheduler.stdin.flush()
        assert _line(scheduler) == "ok"
        after = scrape(url)
        assert after["dagwatch_executor_running_tasks"] == {(): 3.0}  # the child's share left
        assert after["dagwatch_ti_start_total"] == samples["dagwatch_ti_start_total"]
        scheduler.stdin.close()
        assert scheduler.wait(timeout=10) == 0


def _line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 20)
    assert ready, "the multiprocess scheduler did not answer"
    return process.stdout.readline().strip()
