"""OpenTelemetry metrics over OTLP/HTTP, with the label values as attributes.

The MeterProvider is created lazily in the process that emits, and again in a forked
child (the pid is tracked): a provider copied by fork holds the parent's values, and
exporting them from the child would count them twice. For the same reason the export
loop is ours, not the SDK reader's thread, which the SDK restarts in forked children.

Counters and histograms use delta temporality unless
OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE says "cumulative": task attempts are
short-lived processes that share one identity, and deltas from each add up in the
collector where cumulative streams from each would collide. `flush()` exports at once,
so what a task attempt emits just before it ends is not lost; with the collector down
it gives up after `timeout` seconds (the exporter's retries included).

Gauges: the backend keeps each series' current value and sets it again just before
every export, so an export carries exactly the series the backend holds, and the SDK
forgets everything in between (its gauges are collected with delta temporality, which
for a gauge only means "reset after each collection": its memory stays bounded). A
series `forget()` removes is exported no more, once its last value has been exported.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from metrics.catalog import NAMESPACE, TIMER_BUCKETS, Metric

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://localhost:4318"
DEFAULT_INTERVAL = 60.0
#: Histogram bounds in seconds, from a fast scheduler loop to a day-long task.
DEFAULT_BUCKETS = (
    0.005,
    0.01,
    0.05,
    0.1,
    0.5,
    1,
    5,
    10,
    30,
    60,
    300,
    900,
    1800,
    3600,
    21600,
    86400,
)


def _headers(raw: str) -> dict[str, str]:
    """OTEL_EXPORTER_OTLP_HEADERS: `key=value,key2=value2`, values URL-encoded."""
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {unquote(key).strip(): unquote(value).strip() for key, value in pairs}


def _interval(raw: str | None) -> float:
    """OTEL_METRIC_EXPORT_INTERVAL is in milliseconds."""
    if not raw:
        return DEFAULT_INTERVAL
    try:
        seconds = float(raw) / 1000
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        log.warning("OTEL_METRIC_EXPORT_INTERVAL=%r is not a positive number of ms", raw)
        return DEFAULT_INTERVAL
    return seconds


@dataclass
class _Series:
    """A gauge series' current value, and whether an export has carried it yet."""

    value: float
    exported: bool = False
    forgotten: bool = False


_SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class _Pipeline:
    """A provider, its instruments and its export loop, owned by one process."""

    pid: int
    provider: Any
    meter: Any
    stop: threading.Event
    instruments: dict[str, Any] = field(default_factory=dict)
    #: (metric name, labels) -> the gauge series this process reports
    gauges: dict[_SeriesKey, _Series] = field(default_factory=dict)
    gauge_lock: threading.Lock = field(default_factory=threading.Lock)

    def export(self, timeout_millis: float) -> None:
        """Set every held gauge series again, export, then drop the forgotten ones."""
        with self.gauge_lock:
            for (name, labels), series in list(self.gauges.items()):
                self.instruments[name].set(series.value, attributes=dict(labels))
                series.exported = True
                if series.forgotten:
                    del self.gauges[(name, labels)]
        self.provider.force_flush(timeout_millis=timeout_millis)


class OtelBackend:
    """Exports to an OTLP/HTTP endpoint; settings come from the OTEL_* variables given."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        service_name: str | None = None,
        export_interval: float | None = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> None:
        environ = os.environ if environ is None else environ
        base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT
        self.endpoint = (
            endpoint
            or environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
            or f"{base.rstrip('/')}/v1/metrics"
        )
        self.service_name = service_name or environ.get("OTEL_SERVICE_NAME") or NAMESPACE
        self.export_interval = export_interval or _interval(
            environ.get("OTEL_METRIC_EXPORT_INTERVAL")
        )
        preference = environ.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
        self.delta = preference.strip().lower() != "cumulative"
        self.headers = _headers(environ.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
        self.timeout = timeout
        self._pipeline: _Pipeline | None = None
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()

    def count(self, metric: Metric, value: float, labels: Mapping[str, str]) -> None:
        self._instrument(metric).add(value, attributes=dict(labels))

    def gauge(
        self, metric: Metric, value: float, labels: Mapping[str, str], *, delta: bool
    ) -> None:
        pipeline = self._current()
        instrument = self._instrument(metric)
        key = (metric.name, tuple(labels.items()))
        with pipeline.gauge_lock:
            if delta:  # OTel gauges only take absolute values: keep the running value here
                held = pipeline.gauges.get(key)
                value += held.value if held is not None else 0.0
            pipeline.gauges[key] = _Series(value)
            instrument.set(value, attributes=dict(labels))

    def forget(self, metric: Metric, labels: Mapping[str, str]) -> None:
        """Export this series no more, after its last value has been exported once."""
        pipeline = self._pipeline
        if pipeline is None or pipeline.pid != os.getpid():
            return
        key = (metric.name, tuple(labels.items()))
        with pipeline.gauge_lock:
            series = pipeline.gauges.get(key)
            if series is not None and series.exported:
                del pipeline.gauges[key]
            elif series is not None:
                series.forgotten = True

    def timing(self, metric: Metric, seconds: float, labels: Mapping[str, str]) -> None:
        self._instrument(metric).record(seconds, attributes=dict(labels))

    def flush(self) -> None:
        """Export now, from this process's provider (none yet: nothing to export)."""
        pipeline = self._pipeline
        if pipeline is not None and pipeline.pid == os.getpid():
            pipeline.export(self.timeout * 1000)

    def close(self) -> None:
        """Export what is left, then stop the loop and the exporter of this process."""
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None and pipeline.pid == os.getpid():
            pipeline.stop.set()
            pipeline.export(self.timeout * 1000)
            pipeline.provider.shutdown(timeout_millis=self.timeout * 1000)

    def _instrument(self, metric: Metric) -> Any:
        pipeline = self._current()
        instrument = pipeline.instruments.get(metric.name)
        if instrument is None:
            with self._lock:
                instrument = pipeline.instruments.get(metric.name)
                if instrument is None:
                    instrument = self._create(pipeline.meter, metric)
                    pipeline.instruments[metric.name] = instrument
        return instrument

    @staticmethod
    def _create(meter: Any, metric: Metric) -> Any:
        options = {"name": metric.otel_name, "unit": metric.otel_unit, "description": metric.help}
        if metric.type == "counter":
            return meter.create_counter(**options)
        if metric.type == "gauge":
            return meter.create_gauge(**options)
        return meter.create_histogram(**options, explicit_bucket_boundaries_advisory=TIMER_BUCKETS)

    def _current(self) -> _Pipeline:
        pid = os.getpid()
        pipeline = self._pipeline
        if pipeline is not None and pipeline.pid == pid:
            return pipeline
        if self._lock_pid != pid:  # a lock copied by fork may be held by a thread that is gone
            self._lock, self._lock_pid = threading.Lock(), pid
        with self._lock:
            if self._pipeline is None or self._pipeline.pid != pid:
                self._pipeline = self._build(pid)
            return self._pipeline

    def _build(self, pid: int) -> _Pipeline:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
        from opentelemetry.sdk.metrics import _Gauge as Gauge  # its name while experimental
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import Resource

        delta, cumulative = AggregationTemporality.DELTA, AggregationTemporality.CUMULATIVE
        temporality = delta if self.delta else cumulative
        exporter = OTLPMetricExporter(
            endpoint=self.endpoint,
            headers=self.headers,
            timeout=self.timeout,
            # delta for gauges: the SDK drops each series after a collection (see above)
            preferred_temporality={Counter: temporality, Histogram: temporality, Gauge: delta},
        )
        # An infinite interval: the SDK starts no thread; `_export_loop` below exports.
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
        resource = Resource.create({"service.name": self.service_name})
        provider = MeterProvider(metric_readers=[reader], resource=resource, shutdown_on_exit=False)
        stop = threading.Event()
        pipeline = _Pipeline(pid, provider, provider.get_meter(NAMESPACE), stop)
        threading.Thread(
            target=self._export_loop, args=(pipeline,), name="dagwatch-otel-export", daemon=True
        ).start()
        log.debug("OTel metrics pipeline built in pid %s for %s", pid, self.endpoint)
        return pipeline

    def _export_loop(self, pipeline: _Pipeline) -> None:
        while not pipeline.stop.wait(self.export_interval):
            try:
                pipeline.export(self.timeout * 1000)
            except Exception:
                log.warning("OTel metrics export failed", exc_info=True)
