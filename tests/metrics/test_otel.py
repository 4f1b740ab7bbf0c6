"""OpenTelemetry over real OTLP/HTTP to a loopback receiver that decodes the protobuf."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import pytest

from metrics import Stats
from metrics.otel import OtelBackend
from tests.metrics.conftest import OtlpReceiver

DT = {"dag_id": "etl", "task_id": "load"}


def environ_for(otlp: OtlpReceiver, interval_ms: int = 600_000) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        "OTEL_SERVICE_NAME": "dagwatch-test",
        "OTEL_METRIC_EXPORT_INTERVAL": str(interval_ms),
    }


@pytest.fixture
def stats(otlp: OtlpReceiver) -> Iterator[Stats]:
    facade = Stats([OtelBackend(environ=environ_for(otlp))], strict=True)
    yield facade
    facade.close()


def test_settings_come_from_the_environ_given() -> None:
    backend = OtelBackend(
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_SERVICE_NAME": "etl-scheduler",
            "OTEL_METRIC_EXPORT_INTERVAL": "15000",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%3Dcret,team=data",
        }
    )
    assert backend.endpoint == "http://collector:4318/v1/metrics"
    assert (backend.service_name, backend.export_interval) == ("etl-scheduler", 15.0)
    assert backend.headers == {"api-key": "s=cret", "team": "data"}
    assert backend.delta
    defaults = OtelBackend(environ={"OTEL_METRIC_EXPORT_INTERVAL": "soon"})
    assert defaults.endpoint == "http://localhost:4318/v1/metrics"
    assert (defaults.service_name, defaults.export_interval) == ("dagwatch", 60.0)


def test_counters_gauges_and_histograms_arrive_with_attributes(
    stats: Stats, otlp: OtlpReceiver
) -> None:
    stats.incr("ti.finish", tags={**DT, "state": "success"})
    stats.incr("ti.finish", tags={**DT, "state": "success"})
    stats.gauge("pool.open_slots", 7, tags={"pool": "default_pool"})
    stats.timing("task.duration", 2.5, tags=DT)
    stats.timing("task.duration", 0.5, tags=DT)
    stats.incr("custom.rows_loaded", 3, tags={"team": "data"})
    stats.flush()
    [finish] = otlp.wait_for("dagwatch.ti.finish")
    assert (finish.kind, finish.value) == ("sum", 2)
    assert finish.attributes == {"dag_id": "etl", "task_id": "load", "state": "success"}
    assert finish.resource["service.name"] == "dagwatch-test"
    [slots] = otlp.wait_for("dagwatch.pool.open_slots")
    assert (slots.kind, slots.value, slots.attributes, slots.unit) == (
        "gauge",
        7,
        {"pool": "default_pool"},
        "{slot}",
    )
    [duration] = otlp.wait_for("dagwatch.task.duration")
    assert (duration.kind, duration.count, duration.value, duration.unit) == (
        "histogram",
        2,
        3.0,
        "s",
    )
    assert otlp.wait_for("dagwatch.custom.rows_loaded")[0].attributes == {"team": "data"}


def test_a_value_emitted_right_before_flush_is_exported(stats: Stats, otlp: OtlpReceiver) -> None:
    stats.incr("ti.start", tags=DT)
    stats.flush()
    otlp.wait_for("dagwatch.ti.start")
    stats.incr("ti_successes", tags=DT)  # the last thing a task attempt does
    stats.flush()
    assert [p.value for p in otlp.wait_for("dagwatch.ti_successes")] == [1]
    # delta temporality: the earlier counter is not sent again with nothing new
    assert len(otlp.wait_for("dagwatch.ti.start")) == 1


def test_the_export_loop_runs_on_the_interval(otlp: OtlpReceiver) -> None:
    stats = Stats([OtelBackend(environ=environ_for(otlp, interval_ms=50))], strict=True)
    stats.gauge("dagbag_size", 12)
    assert otlp.wait_for("dagwatch.dagbag_size", timeout=5)[0].value == 12
    stats.close()


def test_a_forked_child_builds_its_own_provider_and_its_metrics_arrive(
    stats: Stats, otlp: OtlpReceiver
) -> None:
    stats.incr("ti.start", tags={"dag_id": "parent", "task_id": "t"})
    stats.flush()
    otlp.wait_for("dagwatch.ti.start")
    backend = stats.backends[0]
    assert isinstance(backend, OtelBackend)
    parent_pipeline = backend._pipeline
    with warnings.catch_warnings():  # Python 3.12+ warns on fork with threads running
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: a task attempt
        code = 1
        try:
            stats.incr("ti_successes", tags={"dag_id": "child", "task_id": "t"})
            stats.flush()
            pipeline = backend._pipeline
            code = 0 if pipeline is not parent_pipeline and pipeline.pid == os.getpid() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    [success] = otlp.wait_for("dagwatch.ti_successes")
    assert success.attributes == {"dag_id": "child", "task_id": "t"}
    # the child exported only what it emitted: the parent's counter was not re-sent from it
    assert [p.attributes["dag_id"] for p in otlp.wait_for("dagwatch.ti.start")] == ["parent"]
    stats.incr("ti.start", tags={"dag_id": "parent", "task_id": "t"})  # the parent goes on
    stats.flush()
    assert backend._pipeline is parent_pipeline
