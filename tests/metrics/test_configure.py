"""`configure()` at the edge: all three backends from plain settings, behind `metrics.stats`."""

from __future__ import annotations

from importlib import metadata

import metrics
from metrics import MetricsSettings, configure
from metrics.prometheus import PrometheusBackend
from tests.metrics.conftest import OtlpReceiver, UdpReceiver, http_get


def test_one_call_reaches_statsd_otel_and_prometheus(udp: UdpReceiver, otlp: OtlpReceiver) -> None:
    settings = MetricsSettings(
        statsd_on=True,
        statsd_port=udp.port,
        statsd_tags_mode="dogstatsd",
        otel_on=True,
        prometheus_on=True,
        prometheus_port=0,
        strict=True,
    )
    configured = configure(settings, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url})
    assert metrics.stats.target is configured
    version = metadata.version("dagwatch")
    assert udp.lines(1) == [f"dagwatch.build_info:1|g|#version:{version}"]

    metrics.stats.incr("ti.finish", tags={"dag_id": "etl", "task_id": "load", "state": "failed"})
    metrics.stats.flush()

    assert udp.lines(1) == ["dagwatch.ti.finish:1|c|#dag_id:etl,task_id:load,state:failed"]
    [point] = otlp.wait_for("dagwatch.ti.finish")
    assert point.attributes == {"dag_id": "etl", "task_id": "load", "state": "failed"}
    assert point.resource["service.name"] == "dagwatch"
    prometheus = configured.get_backend(PrometheusBackend)
    assert prometheus is not None
    body = http_get(f"{prometheus.server.url}/metrics")[2]
    assert 'dagwatch_ti_finish_total{dag_id="etl",state="failed",task_id="load"} 1.0' in body
    assert f'dagwatch_build_info{{version="{version}"}} 1.0' in body
    assert http_get(f"{prometheus.server.url}/health")[0] == 200  # no checks yet: healthy

    metrics.stats.install(None)  # closes every backend, the HTTP server included
    assert prometheus.server is None
