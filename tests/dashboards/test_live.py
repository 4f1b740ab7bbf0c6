"""Every shipped PromQL expression against a real Prometheus scraping a real scheduler.

A `dagwatch scheduler` runs the example DAGs, a DAG that fails and a DAG file that does
not import, and delivers alerts to a loopback receiver and to a dead channel; Prometheus
(the Debian binary, on a free loopback port) scrapes it every second and evaluates the
shipped rules, unchanged. Then each panel's queries (Grafana variables substituted as
Grafana would: All = `.*`) and each rule's expression must be valid; each panel that
this run feeds must return series; and the rules for task failures, SLA misses,
import errors and failing deliveries must be active. Their `for` is the real one, so
rules that wait minutes are asserted pending or firing, from Prometheus's rule state.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import textwrap
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine import api
from engine.store import runs
from engine.store.models import Dag
from engine.store.pools import set_pool
from tests.dashboards.conftest import PROMETHEUS, dashboards, panels, rules, tool
from tests.helpers import start_cli

FAILING_DAG = """
from engine import DAG, task


def noted(context):
    print("the doomed run failed")


with DAG("doomed", schedule=None, on_failure_callback=noted):
    @task
    def explode():
        raise RuntimeError("the upstream file never arrived")

    explode()
"""
LATE_DAG = """
import time
from datetime import timedelta
from engine import DAG, task

with DAG("late", schedule=None, max_active_runs=1, deadline=timedelta(seconds=2)):
    @task
    def crunch():
        time.sleep(6)

    crunch()
"""
#: A DAG file that takes seconds to import (heavy imports): a worker loads it before the
#: attempt begins, so the task instance stays queued across scrapes (queued per queue).
SLOW_IMPORT_DAG = """
import time
from engine import DAG, task

time.sleep(3)

with DAG("slow_import", schedule=None):
    @task
    def start():
        pass

    start()
"""
BROKEN_FILE = "from engine import DAG\nraise ImportError('a package this DAG needs is missing')\n"
#: How Grafana fills the variables for "All" and its intervals (a window covering the run).
SUBSTITUTIONS = {
    "$__rate_interval": "5m",
    "$__range": "1h",
    "$__interval": "15s",
    "$dag_id": ".*",
    "$task_id": ".*",
    "$pool": ".*",
}
#: Panels this run does not feed, and why.
NOT_FED = {
    "Zombies killed": "no attempt loses its heartbeat",
    "DAG file imports timed out": "no import exceeds its timeout",
    "Celery worker slots per queue": "the local executor runs it: no Celery worker",
}
#: Rules this run must make active (pending, or firing once their `for` has passed).
ACTIVE = {
    "DagwatchTaskFailureRatioHigh",
    "DagwatchSlaMissed",
    "DagwatchImportErrors",
    "DagwatchAlertDeliveriesFailing",
}
BOUND = 180.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], Any], what: str, timeout: float = BOUND) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not met within {timeout:g} s")


class Receiver:
    """Apprise json:// posts land here and are answered 200."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.posts.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Prometheus:
    """A Prometheus server on a free loopback port, stopped by `close()`."""

    def __init__(self, workdir: Path, target: str) -> None:
        binary = tool("prometheus")  # skips (outside CI) before anything is opened
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            textwrap.dedent(
                f"""
                global:
                  scrape_interval: 1s
                  evaluation_interval: 1s
                rule_files:
                  - {PROMETHEUS / "alerts.yml"}
                scrape_configs:
                  - job_name: dagwatch
                    static_configs:
                      - targets: ["{target}"]
                """
            )
        )
        self.log = (workdir / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.started = time.time()
        try:
            wait_for(self._ready, "Prometheus ready", timeout=60)
        except BaseException:
            self.close()
            raise

    def _ready(self) -> bool:
        assert self.process.poll() is None, "prometheus exited; see prometheus.log"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5):
                return True
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """`data` of a successful API answer; an error answer fails with its message."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        assert body["status"] == "success", f"{params}: {body.get('error')}"
        return body["data"]

    def series(self, expr: str, *, instant: bool = False) -> list[Any]:
        """What Grafana would draw: a range query over the whole run, or an instant one."""
        if instant:
            return self.api("query", query=expr)["result"]
        now = time.time()
        return self.api("query_range", query=expr, start=str(self.started), end=str(now), step="1")[
            "result"
        ]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def grafana_expr(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unsubstituted variable in {expr!r}"
    return expr


@pytest.fixture
def scheduler_env(store, environ, tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """A DAG folder with a failing DAG and a broken file, alert routes, and /metrics on."""
    from engine import runtime

    folder = runtime.get_config()["core.dags_folder"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "doomed.py").write_text(textwrap.dedent(FAILING_DAG))
    (folder / "late.py").write_text(textwrap.dedent(LATE_DAG))
    (folder / "slow_import.py").write_text(textwrap.dedent(SLOW_IMPORT_DAG))
    (folder / "broken_dag.py").write_text(BROKEN_FILE)
    with store.session() as session:
        set_pool(session, "example_pool", 2)
    receiver = Receiver()
    port = free_port()
    routes = {"hook": {"urls": ["env:HOOK_URL"]}, "dead": {"urls": ["env:DEAD_URL"]}}
    env = {
        **environ,
        "DAGWATCH__CORE__LOAD_EXAMPLES": "true",
        "DAGWATCH__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
        "DAGWATCH__SCHEDULER__LOOP_INTERVAL": "0.2",
        "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": store.engine.url.render_as_string(False),
        "DAGWATCH__METRICS__PROMETHEUS_ON": "true",
        "DAGWATCH__METRICS__PROMETHEUS_PORT": str(port),
        "DAGWATCH__ALERTS__ROUTES": json.dumps(routes),
        "DAGWATCH__ALERTS__MAX_ATTEMPTS": "1",
        "HOOK_URL": receiver.url,
        "DEAD_URL": f"json://127.0.0.1:{free_port()}/nobody-listens",
    }
    yield env, f"127.0.0.1:{port}"
    receiver.close()


def _parsed(store, dag_id: str) -> bool:
    with store.session() as session:
        return session.get(Dag, dag_id) is not None


def _run_state(store, dag_id: str, run_id: str) -> str:
    with store.session() as session:
        return runs.get_dag_run(session, dag_id, run_id).state


@pytest.mark.slow
def test_every_panel_and_rule_evaluates_on_a_live_scheduler(
    store, scheduler_env, tmp_path: Path
) -> None:
    env, target = scheduler_env
    prometheus = Prometheus(tmp_path, target)
    scheduler = start_cli(
        "scheduler",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        dag_ids = ("doomed", "late", "slow_import")
        wait_for(lambda: all(_parsed(store, dag_id) for dag_id in dag_ids), "DAGs parsed")
        run_id = api.trigger_dag(store, "doomed", actor="test").run_id
        slow = api.trigger_dag(store, "slow_import", actor="test").run_id
        # two runs of a DAG allowing one at a time: the second waits queued, and the
        # first runs past its deadline
        late = [api.trigger_dag(store, "late", actor="test").run_id for _ in range(2)]
        wait_for(lambda: _run_state(store, "doomed", run_id) == "failed", "the run failing")
        wait_for(lambda: _run_state(store, "late", late[1]) == "success", "the late runs")
        wait_for(lambda: _run_state(store, "slow_import", slow) == "success", "the slow import")
        try:
            wait_for(lambda: _all_fed(prometheus), "every fed panel returning series")
        except AssertionError:
            _assert_every_query_is_valid_and_fed(prometheus)  # names the empty panels
            raise
        wait_for(lambda: ACTIVE <= _active_rules(prometheus), "the failure rules active")
        _assert_every_query_is_valid_and_fed(prometheus)
        _assert_every_rule_evaluates(prometheus)
    finally:
        scheduler.send_signal(signal.SIGTERM)
        output, _ = scheduler.communicate(timeout=90)
        prometheus.close()
    assert scheduler.returncode == 0, output


def _panel_queries() -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    for stem, dashboard in dashboards().items():
        for panel in panels(dashboard):
            exprs = [grafana_expr(target["expr"]) for target in panel["targets"]]
            yield stem, panel, exprs


def _fed(prometheus: Prometheus, panel: dict[str, Any], exprs: list[str]) -> bool:
    instant = panel["type"] in ("table", "bargauge")
    return any(prometheus.series(expr, instant=instant) for expr in exprs)


def _all_fed(prometheus: Prometheus) -> bool:
    return all(
        _fed(prometheus, panel, exprs)
        for _, panel, exprs in _panel_queries()
        if panel["title"] not in NOT_FED
    )


def _active_rules(prometheus: Prometheus) -> set[str]:
    groups = prometheus.api("rules", type="alert")["groups"]
    return {
        rule["name"]
        for group in groups
        for rule in group["rules"]
        if rule["state"] in ("pending", "firing")
    }


def _assert_every_query_is_valid_and_fed(prometheus: Prometheus) -> None:
    empty = []
    titles = set()
    for stem, panel, exprs in _panel_queries():
        titles.add(panel["title"])
        fed = _fed(prometheus, panel, exprs)  # an invalid query fails in `api`
        if not fed and panel["title"] not in NOT_FED:
            empty.append(f"{stem}: {panel['title']}")
    assert not empty, f"panels without data after the run: {empty}"
    assert set(NOT_FED) <= titles, "NOT_FED names a panel that does not exist"
    for dashboard in dashboards().values():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                query = variable["query"]["query"]
                metric, label = query.removeprefix("label_values(").rstrip(")").rsplit(", ", 1)
                values = prometheus.api(
                    f"label/{label}/values", **{"match[]": grafana_expr(metric)}
                )
                assert values, f"variable {variable['name']} offers no value"


def _assert_every_rule_evaluates(prometheus: Prometheus) -> None:
    shipped = {rule["alert"]: rule for rule in rules()}
    groups = prometheus.api("rules", type="alert")["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(loaded) == set(shipped)
    for name, rule in loaded.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
        prometheus.series(shipped[name]["expr"], instant=True)  # valid on its own too
    active = _active_rules(prometheus)
    assert ACTIVE <= active
    assert "DagwatchSchedulerHeartbeatStale" not in active
    sla = loaded["DagwatchSlaMissed"]
    assert sla["state"] == "firing"  # `for: 0m`: a miss pages at once
    labels = {alert["labels"].get("dag_id") for alert in sla["alerts"]}
    assert "example_sla" in labels
    failing = loaded["DagwatchTaskFailureRatioHigh"]["alerts"]
    assert "doomed" in {alert["labels"]["dag_id"] for alert in failing}
