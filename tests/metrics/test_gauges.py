"""Whole sets of gauges: a series that goes away is zeroed once or dropped, per the catalog,
in a real StatsD socket, a real OTLP receiver and a real scrape of /metrics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from metrics import CATALOG, Sample, Stats
from metrics.gauges import GaugeSet
from metrics.guard import OVERFLOW, Guard
from metrics.otel import OtelBackend
from metrics.prometheus import PrometheusBackend
from metrics.statsd import StatsdBackend
from metrics.testing import MemoryBackend
from tests.metrics.conftest import OtlpReceiver, UdpReceiver, labels, scrape

LOAD = {"queue": "default", "dag_id": "etl", "task_id": "load"}
SORT = {"queue": "default", "dag_id": "etl", "task_id": "sort"}


def running(task: dict[str, str], count: int) -> Sample:
    return Sample("ti.running", count, task)


def age(file: str, seconds: float) -> Sample:
    return Sample("dag_processing.last_run.seconds_ago", seconds, {"file": file})


@pytest.fixture
def recorder() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def gauges(recorder: MemoryBackend) -> GaugeSet:
    return GaugeSet(Stats([recorder], strict=True))


def test_every_gauge_has_a_rule_and_ages_and_durations_are_dropped() -> None:
    rules = {metric.name: metric.when_gone for metric in CATALOG if metric.type == "gauge"}
    assert set(rules.values()) == {"zero", "drop"}
    assert rules["ti.running"] == rules["pool.running_slots"] == rules["import_errors"] == "zero"
    dropped = {name for name, rule in rules.items() if rule == "drop"}
    assert dropped == {
        "dag_processing.total_parse_time",
        "dag_processing.last_run.seconds_ago",
        "deadline.slack_seconds",
        "build_info",
    }


def test_a_rule_on_a_counter_or_an_unknown_rule_is_refused() -> None:
    from metrics import Metric

    with pytest.raises(ValueError, match="only gauges have a when_gone rule"):
        Metric("rows.loaded", "counter", "", (), "Rows.", when_gone="drop")
    with pytest.raises(ValueError, match="when_gone 'later' is not one of"):
        Metric("rows.held", "gauge", "", (), "Rows.", when_gone="later")  # type: ignore[arg-type]


def test_a_vanished_count_is_zeroed_once_then_forgotten(
    gauges: GaugeSet, recorder: MemoryBackend
) -> None:
    gauges.send([running(LOAD, 2), running(SORT, 1)])
    gauges.send([running(LOAD, 1)])
    assert recorder.values("ti.running") == [(LOAD, 2), (SORT, 1), (LOAD, 1), (SORT, 0)]
    assert recorder.forgotten("ti.running") == []
    recorder.clear()

    gauges.send([running(LOAD, 1)])
    gauges.send([running(LOAD, 1)])
    assert recorder.values("ti.running") == [(LOAD, 1), (LOAD, 1)]  # 0 was sent once only
    assert recorder.forgotten("ti.running") == [SORT]  # and only once forgotten
    assert gauges.remembered == 1


def test_a_zeroed_series_that_comes_back_is_not_forgotten(
    gauges: GaugeSet, recorder: MemoryBackend
) -> None:
    gauges.send([running(LOAD, 1)])
    gauges.send([])
    gauges.send([running(LOAD, 3)])
    gauges.send([running(LOAD, 3)])
    assert recorder.values("ti.running") == [(LOAD, 1), (LOAD, 0), (LOAD, 3), (LOAD, 3)]
    assert recorder.forgotten("ti.running") == []


def test_a_vanished_age_is_dropped_without_a_zero(
    gauges: GaugeSet, recorder: MemoryBackend
) -> None:
    gauges.send([age("etl.py", 30), age("gone.py", 40)])
    gauges.send([age("etl.py", 35)])
    assert recorder.values("dag_processing.last_run.seconds_ago") == [
        ({"file": "etl.py"}, 30),
        ({"file": "gone.py"}, 40),
        ({"file": "etl.py"}, 35),
    ]
    assert recorder.forgotten("dag_processing.last_run.seconds_ago") == [{"file": "gone.py"}]
    assert gauges.remembered == 1


def test_series_that_come_and_go_never_fill_the_guard() -> None:
    recorder = MemoryBackend()
    # 40 tasks over time, 2 running at once and the 2 before them being zeroed
    gauges = GaugeSet(Stats([recorder], strict=True, guard=Guard(max_series=4)))
    for index in range(20):
        task = {**LOAD, "task_id": f"t{index}"}
        gauges.send([running(task, 1), running({**task, "task_id": f"u{index}"}, 1)])
    sent = [labels_["task_id"] for labels_, _ in recorder.values("ti.running")]
    assert OVERFLOW not in sent
    assert gauges.remembered <= 4


@pytest.fixture
def statsd_stats(udp: UdpReceiver) -> Iterator[Stats]:
    facade = Stats([StatsdBackend("127.0.0.1", udp.port)], strict=True)
    yield facade
    facade.close()


def test_statsd_receives_the_zero_and_nothing_for_a_dropped_series(
    udp: UdpReceiver, statsd_stats: Stats
) -> None:
    gauges = GaugeSet(statsd_stats)
    gauges.send([running(LOAD, 2), age("gone.py", 40)])
    assert sorted(udp.lines(2)) == [
        "dagwatch.dag_processing.last_run.seconds_ago.gone_py:40|g",
        "dagwatch.ti.running.default.etl.load:2|g",
    ]
    gauges.send([])
    assert udp.lines(1) == ["dagwatch.ti.running.default.etl.load:0|g"]
    gauges.send([])
    assert udp.nothing_more()


@pytest.fixture
def otel_stats(otlp: OtlpReceiver) -> Iterator[Stats]:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_METRIC_EXPORT_INTERVAL": "600000"}
    facade = Stats([OtelBackend(environ=environ)], strict=True)
    yield facade
    facade.close()


def exported(otlp: OtlpReceiver, request: int, name: str) -> dict[str, float]:
    """task_id or file -> value of `name` in the `request`-th export."""
    points = [p for p in otlp.requests[request] if p.name == f"dagwatch.{name}"]
    return {p.attributes.get("task_id") or p.attributes["file"]: p.value for p in points}


def export(stats: Stats, otlp: OtlpReceiver) -> int:
    """Export now; the index of the request the receiver got."""
    before = len(otlp.requests)
    stats.flush()
    assert len(otlp.requests) == before + 1
    return before


def test_otel_exports_a_held_gauge_at_every_export_until_it_is_forgotten(
    otel_stats: Stats, otlp: OtlpReceiver
) -> None:
    gauges = GaugeSet(otel_stats)
    gauges.send([running(LOAD, 2), running(SORT, 1), age("etl.py", 30), age("gone.py", 40)])
    first = export(otel_stats, otlp)
    assert exported(otlp, first, "ti.running") == {"load": 2, "sort": 1}
    second = export(otel_stats, otlp)  # nothing set since: the held values again
    assert exported(otlp, second, "ti.running") == {"load": 2, "sort": 1}

    gauges.send([running(LOAD, 1), age("etl.py", 35)])
    third = export(otel_stats, otlp)
    assert exported(otlp, third, "ti.running") == {"load": 1, "sort": 0}
    assert exported(otlp, third, "dag_processing.last_run.seconds_ago") == {"etl.py": 35}

    gauges.send([running(LOAD, 1), age("etl.py", 36)])
    fourth = export(otel_stats, otlp)
    assert exported(otlp, fourth, "ti.running") == {"load": 1}


def test_otel_exports_a_last_value_set_before_the_forget_once(
    otel_stats: Stats, otlp: OtlpReceiver
) -> None:
    gauges = GaugeSet(otel_stats)
    gauges.send([running(LOAD, 2), running(SORT, 1)])
    gauges.send([running(LOAD, 2)])  # sort zeroed, not yet exported
    gauges.send([running(LOAD, 2)])  # sort forgotten before any export
    first = export(otel_stats, otlp)
    assert exported(otlp, first, "ti.running") == {"load": 2, "sort": 0}
    second = export(otel_stats, otlp)
    assert exported(otlp, second, "ti.running") == {"load": 2}


@pytest.fixture
def prometheus() -> Iterator[PrometheusBackend]:
    backend = PrometheusBackend(CollectorRegistry())
    backend.serve("127.0.0.1", 0)
    yield backend
    backend.close()


def test_prometheus_removes_a_forgotten_pushed_series(prometheus: PrometheusBackend) -> None:
    gauges = GaugeSet(Stats([prometheus], strict=True))
    gauges.send([running(LOAD, 2), running(SORT, 1), age("gone.py", 40)])
    url = prometheus.server.url
    assert scrape(url)["dagwatch_ti_running"] == {
        labels(**LOAD): 2.0,
        labels(**SORT): 1.0,
    }
    gauges.send([running(LOAD, 2)])
    samples = scrape(url)
    assert samples["dagwatch_ti_running"] == {labels(**LOAD): 2.0, labels(**SORT): 0.0}
    assert "dagwatch_dag_processing_last_run_seconds_ago" not in samples
    gauges.send([running(LOAD, 2)])
    assert scrape(url)["dagwatch_ti_running"] == {labels(**LOAD): 2.0}
