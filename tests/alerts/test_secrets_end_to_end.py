"""Secrets never leave in clear: a real scheduler (local executor) runs DAGs whose failures
carry secrets of every kind, pages a loopback receiver, serves /metrics; then every table,
every file under DAGWATCH_HOME, every alert received, the CLI's output and /metrics are
searched for the secret strings. Zero occurrences; the masked texts are there instead."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from engine.store.models import Alert, Base, CallbackRecord, DagRun, ImportError_
from tests.alerts.conftest import free_port
from tests.helpers import run_cli, start_cli

#: One secret per kind; each is unique, so any occurrence anywhere is a leak.
SECRETS = {
    "variable": "var-s3cret-7f2a91",  # a secret Variable in the metastore
    "connection": "conn-pa55-c81d03",  # a Connection's password in the metastore
    "env_connection": "envconn-pa55-4be6d2",  # the password of DAGWATCH_CONN_API
    "env_variable": "envvar-t0ken-9a0c5e",  # DAGWATCH_VAR_SERVICE_TOKEN
    "route": "route-pa55-51e7b0",  # an inline route URL's password in the config
    "dead_route": "deadroute-t0ken-a3c6f9",  # a route whose channel is down
    "fallback": "fallback-pa55-0d9e47",  # alerts.fallback_urls
    "notifier": "notifier-pa55-e6b218",  # an AppriseNotifier's env:URL
    "fernet": base64.urlsafe_b64encode(b"secrets-end-to-end-fernet-key-32").decode(),
}

DAG_FILE = """
import logging
from datetime import timedelta

import metrics
from alerts import AppriseNotifier
from engine import DAG, BaseHook, Connection, Variable, task


def failing_callback(context):
    raise RuntimeError("task callback leak " + Variable.get("api_key"))


def run_failed(context):
    raise RuntimeError("dag callback leak " + Connection.get("warehouse").password)


notify = AppriseNotifier(urls="env:NOTIFIER_URL", body="notifier says: {{ exception }}")

with DAG("leaky", schedule=None, on_failure_callback=run_failed):

    @task
    def secret_variable():
        value = Variable.get("api_key")
        print("printing", value)
        logging.getLogger("leaky").warning("logging %s", value)
        raise RuntimeError(f"variable leak {value}")

    @task(retries=1, retry_delay=timedelta(0))
    def connection_password():
        password = BaseHook.get_connection("warehouse").password
        raise ConnectionError(f"cannot log in with {password}")

    @task
    def env_connection():
        raise PermissionError(f"denied at {Connection.get('api').get_uri()}")

    @task(on_failure_callback=[failing_callback, notify])
    def env_variable():
        raise ValueError("env variable leak " + Variable.get("service_token"))

    @task
    def custom_metric():
        metrics.stats.incr("custom.leaky_calls", tags={"token": Variable.get("api_key")})

    secret_variable()
    connection_password()
    env_connection()
    env_variable()
    custom_metric()
"""

BROKEN_FILE = """
from engine import DAG, Variable

raise RuntimeError("import leak " + Variable.get("service_token"))
"""

TASK_FAILURES = ("secret_variable", "connection_password", "env_connection", "env_variable")


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `condition` until it returns something true (or fail naming `what`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def leaks(where: str, text: str | bytes) -> list[str]:
    """`where: kind` for each secret found in `text`."""
    found = []
    for kind, secret in SECRETS.items():
        needle: str | bytes = secret.encode() if isinstance(text, bytes) else secret
        if secret and needle in text:
            found.append(f"{where}: {kind}")
    return found


@pytest.fixture
def leaky(store, environ, receiver, home):
    """The environment of a deployment holding secrets of every kind, with the DAG files."""
    url = receiver.url
    routes = {
        "oncall": {
            "urls": [url("route").replace("://", f"://oncall:{SECRETS['route']}@")],
            "events": ["task_failed", "dag_run_failed", "import_error"],
        },
        "down": {
            "urls": [f"json://down:{SECRETS['dead_route']}@127.0.0.1:{free_port()}/down"],
            "events": ["task_failed"],
        },
    }
    env = {
        **environ,
        "PYTHONUNBUFFERED": "1",
        "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": store.engine.url.render_as_string(False),
        "DAGWATCH__CORE__FERNET_KEY": SECRETS["fernet"],
        "DAGWATCH__CORE__EXECUTOR": "local",
        "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        "DAGWATCH__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
        "DAGWATCH__SCHEDULER__LOOP_INTERVAL": "0.2",
        "DAGWATCH__METRICS__PROMETHEUS_ON": "true",
        "DAGWATCH__METRICS__PROMETHEUS_PORT": "0",
        "DAGWATCH__ALERTS__ROUTES": json.dumps(routes),
        "DAGWATCH__ALERTS__FALLBACK_URLS": url("fallback").replace(
            "://", f"://fallback:{SECRETS['fallback']}@"
        ),
        "DAGWATCH__ALERTS__MAX_ATTEMPTS": "1",
        "DAGWATCH__ALERTS__MAX_AGE": "1",  # the dead route's page is given up, not retried
        "DAGWATCH__ALERTS__GROUP_WINDOW": "0",
        "DAGWATCH_CONN_API": f"http://svc:{SECRETS['env_connection']}@api.example.com:8443/v1",
        "DAGWATCH_VAR_SERVICE_TOKEN": SECRETS["env_variable"],
        "NOTIFIER_URL": url("notifier").replace("://", f"://notify:{SECRETS['notifier']}@"),
        "USER": "dagwatch-test",
    }
    folder = home / "dags"
    folder.mkdir(exist_ok=True)
    (folder / "leaky.py").write_text(textwrap.dedent(DAG_FILE))
    (folder / "broken.py").write_text(textwrap.dedent(BROKEN_FILE))
    for args in (
        ("variables", "set", "api_key", SECRETS["variable"]),
        ("connections", "add", "warehouse", "--conn-uri",
         f"postgres://loader:{SECRETS['connection']}@db.example.com:5432/dw"),
        ("dags", "reserialize"),
        ("dags", "trigger", "leaky"),
    ):  # fmt: skip
        result = run_cli(*args, env=env)
        assert result.returncode == 0, result.stderr
    return env


def _settled(store) -> bool:
    """The run failed, its DAG callback ran, every alert was delivered or given up."""
    with store.session(readonly=True) as session:
        run_state = session.scalar(select(DagRun.state).where(DagRun.dag_id == "leaky"))
        callbacks = session.execute(select(CallbackRecord.task_id, CallbackRecord.kind)).all()
        alerts = session.execute(select(Alert.route, Alert.event, Alert.status)).all()
    events = {(route, event) for route, event, _ in alerts}
    return (
        run_state == "failed"
        and (None, "on_failure_callback") in callbacks  # the run's, in a callback process
        and ("env_variable", "on_failure_callback") in callbacks
        and ("oncall", "dag_run_failed") in events
        and ("oncall", "import_error") in events
        and ("notifier", "task_failed") in events
        and sum(event == "alert_delivery_failed" for _, event in events) >= 1
        and all(status != "pending" for _, _, status in alerts)
    )


def _metrics_url(output: Path) -> str | None:
    found = re.search(r"metrics: (http://\S+/metrics)", output.read_text())
    return found.group(1) if found else None


def _scrape(url: str) -> str | None:
    """The exposition, once the task's custom metric is in it."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return text if "leaky_calls" in text else None


def _tables(store) -> dict[str, str]:
    """Every row of every table, as text."""
    dumped = {}
    with store.session(readonly=True) as session:
        for table in Base.metadata.sorted_tables:
            rows = session.execute(select(table)).all()
            dumped[table.name] = "\n".join(
                json.dumps(
                    [v.decode("latin-1") if isinstance(v, bytes) else v for v in row], default=str
                )
                for row in rows
            )
    return dumped


CLI_VERBS = (
    ("config", "list"),
    ("config", "list", "--output", "json"),
    ("config", "get-value", "alerts", "routes"),
    ("config", "get-value", "alerts", "fallback_urls"),
    ("config", "get-value", "core", "fernet_key"),
    ("variables", "get", "api_key"),
    ("variables", "list"),
    ("connections", "get", "warehouse"),
    ("connections", "list", "--output", "json"),
    ("alerts", "list", "--output", "json"),
    ("dags", "list-import-errors"),
    ("dags", "list-runs", "leaky"),
    ("tasks", "test", "leaky", "env_variable"),
)


@pytest.mark.slow
def test_secrets_of_every_kind_are_never_written_or_sent_in_clear(store, leaky, receiver, home):
    output = home.parent / "scheduler.out"
    with output.open("w") as sink:
        scheduler = start_cli(
            "scheduler",
            env=leaky,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        metrics_url = wait_until(lambda: _metrics_url(output), 60, "the /metrics address")
        wait_until(lambda: _settled(store), 120, "the failed run and its alerts")
        exposition = wait_until(lambda: _scrape(metrics_url), 30, "the custom metric")
    finally:
        scheduler.send_signal(signal.SIGTERM)
        try:
            scheduler.wait(60)
        finally:
            scheduler.kill()
    cli = {" ".join(args): run_cli(*args, env=leaky) for args in CLI_VERBS}

    found: list[str] = []
    for name, text in _tables(store).items():
        found += leaks(f"table {name}", text)
    files = [path for path in home.parent.rglob("*") if path.is_file()]
    for path in files:
        found += leaks(f"file {path.relative_to(home.parent)}", path.read_bytes())
    for post in receiver.posts:
        found += leaks(f"alert {post.path}", f"{post.path}\n{post.title}\n{post.message}")
    for command, result in cli.items():
        found += leaks(f"dagwatch {command}", result.stdout + result.stderr)
    found += leaks("/metrics", exposition)
    assert found == []

    # Not vacuous: the failures happened and were told, their secrets masked in place.
    assert any(path.name == "attempt=1.log" for path in files)
    assert "variable leak ***" in _tables(store)["task_try"]
    with store.session(readonly=True) as session:
        (stacktrace,) = session.scalars(select(ImportError_.stacktrace)).all()
    assert "import leak ***" in stacktrace
    texts = [f"{post.title}\n{post.message}" for post in receiver.posts]
    for task_id, masked in (
        ("secret_variable", "variable leak ***"),
        ("connection_password", "cannot log in with ***"),
        ("env_connection", "denied at http://svc:***@api.example.com:8443/v1"),
        ("env_variable", "env variable leak ***"),
    ):
        assert any(task_id in text and masked in text for text in texts), (task_id, texts)
    assert any("notifier says: ValueError: env variable leak ***" in text for text in texts)
    assert any("import leak ***" in text for text in texts)
    assert any("alert_delivery_failed" in text or "could not be delivered" in text
               for text in texts)  # fmt: skip
    assert cli["config get-value alerts routes"].stdout.strip() == "{oncall: ***, down: ***}"
    assert cli["config get-value core fernet_key"].stdout.strip() == "***"
    assert cli["variables get api_key"].stdout.strip() == "***"
    assert "env variable leak ***" in cli["tasks test leaky env_variable"].stdout
    assert re.search(r'leaky_calls\S*\{[^}]*token="_+"', exposition), exposition[-2000:]
