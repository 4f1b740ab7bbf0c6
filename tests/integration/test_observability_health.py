"""Health checks: real GET /health over HTTP against a seeded metastore."""

from __future__ import annotations

import json
import os
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from engine.execution.base import AttemptRequest
from engine.execution.stub import StubExecutor
from engine.observability.health import (
    dag_processor_check,
    error_detail,
    health_source,
    install_health_checks,
)
from engine.parsing.parser import process_folders
from engine.store import scheduling
from engine.store.db import Store
from metrics.prometheus import PrometheusBackend
from metrics.server import MetricsServer

T0 = datetime(2026, 1, 10, 12, tzinfo=UTC)
BROKEN_URL = "postgresql+psycopg://dagwatch:s3cr3t-pw@127.0.0.1:1/metastore_db"


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    backend = PrometheusBackend(CollectorRegistry())
    served = backend.serve("127.0.0.1", 0)
    yield served
    backend.close()


def get_health(server: MetricsServer) -> tuple[int, str]:
    """(status, body) of a real GET /health; a 503 is an answer, not an error."""
    try:
        with urllib.request.urlopen(f"{server.url}/health", timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def add_scheduler_job(store: Store, heartbeat: datetime, *, state: str = "running") -> int:
    with store.session() as session:
        job_id = scheduling.start_job(session, "scheduler", 4242, heartbeat - timedelta(hours=1))
        scheduling.heartbeat_job(session, job_id, heartbeat)
        if state != "running":
            scheduling.end_job(session, job_id, state, heartbeat)
    return job_id


def checks_of(body: str) -> dict[str, Any]:
    return json.loads(body)["checks"]


def test_a_fresh_scheduler_heartbeat_is_healthy(store: Store, config, server) -> None:
    config = config.with_overrides(core__parallelism=8, core__load_examples=False)
    job_id = add_scheduler_job(store, T0 - timedelta(seconds=5))
    executor = StubExecutor(parallelism=4)
    executor.queue([AttemptRequest(7, "etl", "r1", "load", "/dags/etl.py")])
    install_health_checks(server, store, config, executor=executor, clock=lambda: T0)

    status, body = get_health(server)

    assert status == 200, body
    assert json.loads(body)["status"] == "healthy"
    checks = checks_of(body)
    assert set(checks) == {"metastore", "scheduler", "dag_processor", "executor"}
    assert all(check["ok"] for check in checks.values())
    scheduler = checks["scheduler"]["detail"]
    assert scheduler["job_id"] == job_id
    assert scheduler["pid"] == 4242
    assert scheduler["heartbeat_age_seconds"] == 5.0
    assert scheduler["heartbeat_timeout_seconds"] == config["scheduler.heartbeat_timeout"]
    assert checks["metastore"]["detail"]["latency_ms"] >= 0
    assert checks["dag_processor"]["detail"] == {"dag_files": 0, "note": "no DAG files found"}
    executor_detail = checks["executor"]["detail"]
    assert (executor_detail["open_slots"], executor_detail["running"]) == (3, 1)
    assert executor_detail["parallelism"] == 8


def test_a_stale_scheduler_heartbeat_is_unhealthy(store: Store, config, server) -> None:
    config = config.with_overrides(scheduler__heartbeat_timeout=60, core__load_examples=False)
    add_scheduler_job(store, T0 - timedelta(seconds=61))
    install_health_checks(server, store, config, clock=lambda: T0)

    status, body = get_health(server)

    assert status == 503, body
    assert json.loads(body)["status"] == "unhealthy"
    checks = checks_of(body)
    assert checks["scheduler"]["ok"] is False
    assert checks["scheduler"]["detail"]["heartbeat_age_seconds"] == 61.0
    assert checks["metastore"]["ok"] is True
    assert checks["dag_processor"]["ok"] is True
    assert "executor" not in checks


def test_no_running_scheduler_job_is_unhealthy(store: Store, config, server) -> None:
    config = config.with_overrides(core__load_examples=False)
    add_scheduler_job(store, T0 - timedelta(seconds=1), state="failed")
    install_health_checks(server, store, config, clock=lambda: T0)

    status, body = get_health(server)

    assert status == 503, body
    scheduler = checks_of(body)["scheduler"]
    assert scheduler == {
        "ok": False,
        "detail": {
            "error": "no running scheduler job",
            "heartbeat_timeout_seconds": config["scheduler.heartbeat_timeout"],
        },
    }


def test_the_serving_scheduler_is_judged_by_its_own_job(store: Store, config) -> None:
    config = config.with_overrides(core__load_examples=False)
    own = add_scheduler_job(store, T0 - timedelta(seconds=120))
    other = add_scheduler_job(store, T0 - timedelta(seconds=2))
    mine, anyone = MetricsServer(CollectorRegistry()), MetricsServer(CollectorRegistry())
    install_health_checks(mine, store, config, job_id=lambda: own, clock=lambda: T0)
    install_health_checks(anyone, store, config, clock=lambda: T0)

    healthy_mine, body_mine = mine.health()
    healthy_any, body_any = anyone.health()

    assert healthy_mine is False
    assert body_mine["checks"]["scheduler"]["detail"]["job_id"] == own
    assert healthy_any is True
    assert body_any["checks"]["scheduler"]["detail"]["job_id"] == other


def test_a_broken_metastore_is_unhealthy_and_keeps_its_url_secret(config, server) -> None:
    config = config.with_overrides(core__load_examples=False)
    broken = Store(BROKEN_URL)
    try:
        install_health_checks(server, broken, config, clock=lambda: T0)
        status, body = get_health(server)
    finally:
        broken.dispose()

    assert status == 503, body
    checks = checks_of(body)
    for name in ("metastore", "scheduler", "dag_processor"):
        assert checks[name]["ok"] is False
        assert checks[name]["detail"]["error"] == "StoreError"
    assert "cannot connect to the metastore" in checks["metastore"]["detail"]["message"]
    for secret in ("s3cr3t", "postgresql", "metastore_db", "dagwatch:"):
        assert secret not in body


def test_error_details_blank_the_url_and_password() -> None:
    store = Store(BROKEN_URL)
    try:
        detail = error_detail(
            RuntimeError(f"at {BROKEN_URL} (password s3cr3t-pw)\nsecond line"), store
        )
    finally:
        store.dispose()

    assert detail == {"error": "RuntimeError", "message": "at *** (password ***)"}


def write_dag(folder: Path, name: str, dag_id: str) -> Path:
    path = folder / name
    path.write_text(
        textwrap.dedent(
            f"""
            from engine import DAG, EmptyOperator
            with DAG({dag_id!r}, schedule=None):
                EmptyOperator(task_id="t")
            """
        )
    )
    return path.resolve()


def set_mtime(path: Path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


def test_the_dag_processor_is_behind_when_a_change_waits_past_the_grace(
    store: Store, config
) -> None:
    config = config.with_overrides(
        core__load_examples=False, scheduler__min_file_process_interval=10
    )  # grace: max(3 x 10, 60) = 60 s
    folder = Path(config["core.dags_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    path = write_dag(folder, "etl.py", "etl")
    set_mtime(path, T0 - timedelta(seconds=600))
    process_folders(store, config, now=T0 - timedelta(seconds=500))
    check = dag_processor_check(store, config, clock=lambda: T0)

    ok, detail = check()
    assert ok, detail  # nothing changed since: an old last_parsed is no failure
    assert detail["newest_parse_age_seconds"] == 500.0
    assert (detail["dag_files"], detail["files_in_metastore"], detail["files_behind"]) == (1, 1, 0)

    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    set_mtime(path, T0 - timedelta(seconds=30))
    assert check()[0]  # changed 30 s ago: still within the grace

    set_mtime(path, T0 - timedelta(seconds=100))
    ok, detail = check()
    assert not ok
    assert detail["behind"] == ["etl.py"]
    assert detail["oldest_unparsed_change_seconds"] == 100.0

    path.write_text(original)  # touched, same content: nothing to import
    set_mtime(path, T0 - timedelta(seconds=100))
    assert check()[0]

    new = write_dag(folder, "new.py", "new")
    set_mtime(new, T0 - timedelta(seconds=61))
    ok, detail = check()
    assert not ok
    assert detail["behind"] == ["new.py"]

    process_folders(store, config, now=T0 - timedelta(seconds=5))
    ok, detail = check()
    assert ok, detail
    assert (detail["dag_files"], detail["files_in_metastore"], detail["files_behind"]) == (2, 2, 0)


def test_metrics_show_each_check_and_the_heartbeat_age(store: Store, config) -> None:
    backend = PrometheusBackend(CollectorRegistry())
    server = backend.serve("127.0.0.1", 0)
    try:
        timeout = config["scheduler.heartbeat_timeout"]
        add_scheduler_job(store, T0 - timedelta(seconds=timeout + 30))
        install_health_checks(server, store, config, clock=lambda: T0)
        backend.add_source(health_source(server))
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as response:
            body = response.read().decode()
    finally:
        backend.close()

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    assert samples[("dagwatch_health_check", (("check", "scheduler"),))] == 0.0
    assert samples[("dagwatch_health_check", (("check", "metastore"),))] == 1.0
    assert samples[("dagwatch_health_check", (("check", "dag_processor"),))] == 1.0
    assert samples[("dagwatch_scheduler_heartbeat_age_seconds", ())] == timeout + 30
