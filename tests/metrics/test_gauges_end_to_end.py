"""A real `dagwatch scheduler` on StatsD, OpenTelemetry and Prometheus: the gauges of a
task that stops running, of a task that stops waiting for its pool and of a deleted DAG
file are zeroed once or dropped (as the catalog says), and an unchanged DAG file's parse
duration arrives every processor pass without the file being imported again."""

from __future__ import annotations

import signal
import subprocess
import textwrap
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from engine import api
from engine.parsing.parser import process_folders
from engine.store import runs
from engine.store.models import DagFile
from engine.store.pools import set_pool
from tests.helpers import start_cli
from tests.metrics.conftest import OtlpReceiver, UdpReceiver, labels, scrape
from tests.metrics.test_end_to_end import _free_port, _wait

HELD = """
import time
from pathlib import Path
from engine import DAG, task

RELEASE = Path({release!r})

def hold_until_released():
    deadline = time.monotonic() + 120
    while not RELEASE.exists() and time.monotonic() < deadline:
        time.sleep(0.05)

with DAG("held", schedule=None):
    @task(pool="solo", priority_weight=10)
    def hold():
        hold_until_released()

    @task(pool="solo")
    def wait():
        hold_until_released()

    hold()
    wait()
"""
DOOMED = """
from engine import DAG, task

with DAG("doomed", schedule=None):
    @task
    def nothing():
        pass

    nothing()
"""
HOLD = labels(queue="default", dag_id="held", task_id="hold")


class Lines:
    """Every StatsD line the scheduler sends, in order, read by a thread of its own."""

    def __init__(self, udp: UdpReceiver) -> None:
        self.udp = udp
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.udp.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = self.udp.sock.recvfrom(65535)[0]
            except TimeoutError:
                continue
            self.lines.extend(data.decode().split("\n"))

    def index(self, line: str, after: int = 0) -> int | None:
        """Where `line` first arrives at or after position `after`."""
        snapshot = list(self.lines)
        return next((i for i in range(after, len(snapshot)) if snapshot[i] == line), None)

    def wait_for(self, line: str, after: int = 0) -> int:
        return _wait(lambda: _plus_one(self.index(line, after)), what=line) - 1

    def matching(self, prefix: str, after: int = 0) -> list[str]:
        return [line for line in list(self.lines)[after:] if line.startswith(prefix)]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _plus_one(index: int | None) -> int | None:
    return None if index is None else index + 1  # 0 is a found line, not a failure


@pytest.fixture
def scheduler(store, environ, udp: UdpReceiver, otlp: OtlpReceiver, tmp_path: Path) -> Iterator:
    """The DAGs parsed, the `solo` pool of one slot, a scheduler on all three backends."""
    from engine import runtime

    config = runtime.get_config().with_overrides(
        core__load_examples=False, core__dags_are_paused_at_creation=False
    )
    folder = config["core.dags_folder"]
    folder.mkdir(parents=True, exist_ok=True)
    release = tmp_path / "release"
    (folder / "held.py").write_text(textwrap.dedent(HELD.format(release=str(release))))
    (folder / "doomed.py").write_text(textwrap.dedent(DOOMED))
    assert process_folders(store, config).import_errors == 0
    with store.session() as session:
        set_pool(session, "solo", 1)
    port = _free_port()
    env = {
        **environ,
        "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        "DAGWATCH__SCHEDULER__LOOP_INTERVAL": "0.2",
        "DAGWATCH__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "1",
        "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": store.engine.url.render_as_string(False),
        "DAGWATCH__METRICS__STATSD_ON": "true",
        "DAGWATCH__METRICS__STATSD_PORT": str(udp.port),
        "DAGWATCH__METRICS__OTEL_ON": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "DAGWATCH__METRICS__PROMETHEUS_ON": "true",
        "DAGWATCH__METRICS__PROMETHEUS_PORT": str(port),
    }
    lines = Lines(udp)
    process = start_cli(
        "scheduler",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process, lines, f"http://127.0.0.1:{port}", folder, release
    finally:
        release.touch()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        lines.stop()
    assert process.returncode == 0, out + err


def _last_parsed(store, path: Path) -> datetime:
    with store.session() as session:
        row = session.get(DagFile, str(path.resolve()))
        assert row is not None
        return row.last_parsed


def _otel_series(otlp: OtlpReceiver, name: str, match: dict[str, str]) -> list[list[float]]:
    """Per OTLP request, the values of `name` whose attributes include `match`."""
    with otlp._lock:
        requests = list(otlp.requests)
    return [
        [
            p.value
            for p in points
            if p.name == f"dagwatch.{name}" and match.items() <= p.attributes.items()
        ]
        for points in requests
    ]


def _first_request(
    otlp: OtlpReceiver, found: Callable[[list[Any]], bool], after: int = 0
) -> int | None:
    """The index of the first OTLP request from `after` on whose points are `found`."""
    with otlp._lock:
        requests = list(otlp.requests)
    return next((i for i in range(after, len(requests)) if found(requests[i])), None)


def _values(points: list[Any], series: tuple[tuple[str, str], ...]) -> list[float]:
    return [
        p.value for p in points if p.name == "dagwatch.ti.running" and p.attributes == dict(series)
    ]


def _has(points: list[Any], name: str) -> bool:
    return any(p.name == name for p in points)


def test_gauges_of_work_that_ended_are_zeroed_once_and_parse_times_keep_coming(
    store, scheduler, otlp: OtlpReceiver
) -> None:
    process, lines, url, folder, release = scheduler
    parsed_before = _last_parsed(store, folder / "held.py")
    run_id = api.trigger_dag(store, "held", actor="test").run_id

    # while `hold` runs, `wait` is scheduled behind it (the pool has one slot)
    running_at = lines.wait_for("dagwatch.ti.running.default.held.hold:1|g")
    lines.wait_for("dagwatch.pool.running_slots.solo:1|g")
    lines.wait_for("dagwatch.executor.running_tasks:1|g")
    lines.wait_for("dagwatch.ti.scheduled.default.held.wait:1|g")
    lines.wait_for("dagwatch.pool.starving_tasks.solo:1|g")
    samples = _wait(lambda: (s := scrape(url)).get("dagwatch_ti_running") and s, what="scrape")
    assert samples["dagwatch_ti_running"][HOLD] == 1
    on = _wait(lambda: [v for v in _otel_series(otlp, "ti.running", dict(HOLD)) if v], what="otel")
    assert on[-1] == [1]

    release.touch()
    _wait(lambda: _run_state(store, run_id) == "success", what="the run succeeding")
    zero_at = lines.wait_for("dagwatch.ti.running.default.held.hold:0|g", after=running_at)
    lines.wait_for("dagwatch.ti.scheduled.default.held.wait:0|g")
    lines.wait_for("dagwatch.pool.running_slots.solo:0|g", after=running_at)
    lines.wait_for("dagwatch.executor.running_tasks:0|g", after=running_at)
    # zeroed once: two more pushes later, no further value for the series
    pushes = "dagwatch.pool.open_slots.default_pool:"
    _wait(lambda: len(lines.matching(pushes, after=zero_at)) >= 3, what="two more pushes")
    assert lines.matching("dagwatch.ti.running.default.held.hold:", after=zero_at) == [
        "dagwatch.ti.running.default.held.hold:0|g"
    ]
    # Prometheus reads the metastore at scrape time: the series is gone, pools stay
    samples = scrape(url)
    assert HOLD not in samples.get("dagwatch_ti_running", {})
    assert samples["dagwatch_pool_running_slots"][labels(pool="solo")] == 0
    # OpenTelemetry: 1 while it ran, then 0, then the series is exported no more
    zero = _wait(
        lambda: _plus_one(_first_request(otlp, lambda points: _values(points, HOLD) == [0])),
        what="the OTel series' zero",
    )
    _wait(
        lambda: _first_request(
            otlp,
            lambda points: _values(points, HOLD) == [] and _has(points, "dagwatch.dagbag_size"),
            after=zero,
        ),
        what="an export without the series after its zero",
    )
    held = [v for values in _otel_series(otlp, "ti.running", dict(HOLD)) for v in values]
    first_zero = held.index(0)
    assert set(held[:first_zero]) == {1} and set(held[first_zero:]) == {0}

    # steady state: the unchanged file's parse duration comes every pass, not re-imported
    durations = "dagwatch.dag_processing.last_duration.held_py:"
    _wait(lambda: len(lines.matching(durations)) >= 3, what="three passes' durations")
    assert all(line.endswith("|ms") for line in lines.matching(durations))
    ages = "dagwatch.dag_processing.last_run.seconds_ago.held_py:"
    _wait(lambda: len(lines.matching(ages)) >= 3, what="three pushes of the file's age")
    assert _last_parsed(store, folder / "held.py") == parsed_before

    # a deleted file: its age is dropped (no 0), in StatsD and in OpenTelemetry
    (folder / "doomed.py").unlink()
    smaller = lines.wait_for("dagwatch.dagbag_size:1|g")
    _wait(lambda: len(lines.matching("dagwatch.dagbag_size:", after=smaller)) >= 3, what="pushes")
    assert lines.matching("dagwatch.dag_processing.last_run.seconds_ago.doomed_py:", smaller) == []
    assert lines.matching("dagwatch.dag_processing.last_duration.doomed_py:", smaller) == []
    assert "dagwatch.dag_processing.last_run.seconds_ago.doomed_py:0|g" not in lines.lines
    ages = _otel_series(otlp, "dag_processing.last_run.seconds_ago", {"file": "doomed.py"})
    assert any(ages) and 0 not in [value for values in ages for value in values]
    first = _first_request(
        otlp, lambda points: any(p.name == "dagwatch.dagbag_size" and p.value == 1 for p in points)
    )
    assert first is not None and not any(ages[first + 1 :])
    samples = scrape(url)
    seconds_ago = samples["dagwatch_dag_processing_last_run_seconds_ago"]
    assert labels(file="doomed.py") not in seconds_ago and labels(file="held.py") in seconds_ago
    assert process.poll() is None


def _run_state(store, run_id: str) -> str:
    with store.session() as session:
        return runs.get_dag_run(session, "held", run_id).state
