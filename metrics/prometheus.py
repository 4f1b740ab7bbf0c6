"""Prometheus: a native `/metrics` endpoint built from the catalog, no statsd_exporter needed.

Metric objects are made from the catalog at construction, with their labels fixed, and
exposed through one collector registered in the registry passed in (never the global
REGISTRY). Values read at scrape time come from sources: callables the engine adds
with `add_source()` that return `Sample`s (pool slots, task states, import errors from
the metastore); once a source has provided a metric, pushed values of that metric are
no longer shown, so the metastore is the one truth for it. A series a source no longer
returns is absent from the next scrape, whatever the catalog's `when_gone` rule (that
rule is for push backends): Prometheus then marks it stale, its own way of saying so.

Multiprocess mode (`multiproc_dir`): task attempts run in child processes, so their
values are written through prometheus_client's multiprocess files and summed by the
serving process at scrape time (MultiProcessCollector). The directory's lifecycle:
- the serving process (the scheduler) empties it when it starts (`clear_multiproc_dir`),
  before any worker starts, so values of a previous run are not counted again;
- every process that emits writes its own files there, named after its pid;
- when a worker process exits, the engine calls `mark_process_dead(pid, dir)`, which
  drops that process's `live*` gauges (counters and histograms keep their counts);
- one directory per scheduler: two schedulers sharing one would clear each other.
Gauges combine across processes by `MULTIPROCESS_MODES` (default "mostrecent": the
last value set by any process, right for snapshots such as pool slots).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric as Family
from prometheus_client.multiprocess import MultiProcessCollector

from metrics.catalog import CATALOG, TIMER_BUCKETS, Catalog, Metric, Sample
from metrics.guard import MAX_SERIES_PER_METRIC, OVERFLOW, sanitize_value

if TYPE_CHECKING:
    from metrics.server import MetricsServer

log = logging.getLogger(__name__)

Source = Callable[[], Iterable[Sample]]
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MultiprocessMode = Literal[
    "all",
    "liveall",
    "min",
    "livemin",
    "max",
    "livemax",
    "sum",
    "livesum",
    "mostrecent",
    "livemostrecent",
]
#: How a gauge's values from several processes combine (prometheus_client's modes).
#: Each executor reports its own slots and tasks: their sum over live processes.
MULTIPROCESS_MODES: Mapping[str, MultiprocessMode] = {
    "executor.open_slots": "livesum",
    "executor.queued_tasks": "livesum",
    "executor.running_tasks": "livesum",
    "build_info": "max",
}
DEFAULT_MULTIPROCESS_MODE: MultiprocessMode = "mostrecent"


def prepare_multiproc_dir(path: str | Path) -> Path:
    """Create the directory and remove every file of a previous run (scheduler start)."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    return directory


def mark_process_dead(pid: int, path: str | Path) -> None:
    """Forget the live gauges of a worker process that exited."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(path))


def _use_multiprocess_values(directory: Path) -> None:
    """Switch this process's prometheus_client to multiprocess files in `directory`.

    prometheus_client takes no argument for this: it picks its value class from
    PROMETHEUS_MULTIPROC_DIR when first imported, and reads the variable again whenever
    a process opens its file. So this is the one place dagwatch writes the environment,
    when the backend is built at the edge; workers started afterwards (forked, or
    spawned by the forkserver) inherit both.
    """
    current = os.environ.get(MULTIPROC_ENV)
    if current and Path(current).resolve() != directory.resolve():
        raise ValueError(f"{MULTIPROC_ENV} is already {current}, not {directory}")
    os.environ[MULTIPROC_ENV] = str(directory)
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


def family_name(metric: Metric) -> str:
    """The name prometheus_client gives a family: counters without `_total`."""
    name = metric.prometheus_name
    return name.removesuffix("_total") if metric.type == "counter" else name


class PrometheusBackend:
    """Values into prometheus_client metrics; `serve()` starts `/metrics` and `/health`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        multiproc_dir: str | Path | None = None,
        clear_multiproc_dir: bool = False,
        catalog: Catalog = CATALOG,
        max_series: int = MAX_SERIES_PER_METRIC,
    ) -> None:
        if registry is prometheus_client.REGISTRY:
            raise ValueError("pass a CollectorRegistry of dagwatch's own, not the global one")
        # `_created` samples add a series to every counter and histogram child, and a
        # scrape costs per line; rate() and histogram_quantile() never read them.
        prometheus_client.disable_created_metrics()
        self.registry = registry
        self.catalog = catalog
        self.max_series = max_series
        self.multiproc_dir = Path(multiproc_dir) if multiproc_dir else None
        self._files: MultiProcessCollector | None = None
        if self.multiproc_dir is not None:
            if clear_multiproc_dir:
                prepare_multiproc_dir(self.multiproc_dir)
            self.multiproc_dir.mkdir(parents=True, exist_ok=True)
            _use_multiprocess_values(self.multiproc_dir)
            self._files = MultiProcessCollector(None, path=str(self.multiproc_dir))
        self._lock = threading.Lock()
        self._metrics: dict[str, Any] = {m.name: self._build(m) for m in catalog}
        self._gauge_values: dict[tuple[str, tuple[str, ...]], float] = {}
        self._sources: list[Source] = []
        self._failing_sources: set[int] = set()
        self._sourced: set[str] = set()
        self._rejected: set[str] = set()
        self.server: MetricsServer | None = None  # once serve() ran
        registry.register(_ScrapeCollector(self))

    def add_source(self, source: Source) -> None:
        """Read `source()` at every scrape; it returns Samples of catalog gauges/counters."""
        self._sources.append(source)

    def serve(self, host: str = "127.0.0.1", port: int = 9112) -> MetricsServer:
        """Start the HTTP server (a daemon thread) and return it; `close()` stops it."""
        from metrics.server import MetricsServer

        server = self.server = MetricsServer(self.registry, host, port).start()
        return server

    def count(self, metric: Metric, value: float, labels: Mapping[str, str]) -> None:
        self._child(metric, labels).inc(value)

    def gauge(
        self, metric: Metric, value: float, labels: Mapping[str, str], *, delta: bool
    ) -> None:
        child = self._child(metric, labels)
        if delta and self._mode(metric) == "mostrecent" and self._files is not None:
            # mostrecent gauges refuse inc(); move this process's own last value instead
            key = (metric.name, tuple(labels.values()))
            value = self._gauge_values[key] = self._gauge_values.get(key, 0.0) + value
            delta = False
        if delta:
            child.inc(value)
        else:
            child.set(value)

    def timing(self, metric: Metric, seconds: float, labels: Mapping[str, str]) -> None:
        self._child(metric, labels).observe(seconds)

    def forget(self, metric: Metric, labels: Mapping[str, str]) -> None:
        """Remove a pushed gauge's series from the next scrapes (Prometheus marks it stale).

        prometheus_client cannot remove a series in multiprocess mode: there it keeps
        its last value (the metastore gauges are sourced, so they are not affected).
        """
        self._gauge_values.pop((metric.name, tuple(labels.values())), None)
        instrument = self._metrics.get(metric.name)
        if labels and instrument is not None and self._files is None:
            instrument.remove(*labels.values())

    def flush(self) -> None:
        """Values are written as they come (memory or the multiprocess files)."""

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _mode(self, metric: Metric) -> MultiprocessMode:
        return MULTIPROCESS_MODES.get(metric.name, DEFAULT_MULTIPROCESS_MODE)

    def _build(self, metric: Metric) -> Any:
        name, labels = family_name(metric), metric.labels
        if metric.type == "counter":
            return Counter(name, metric.help, labels, registry=None)
        if metric.type == "timer":
            return Histogram(name, metric.help, labels, registry=None, buckets=TIMER_BUCKETS)
        if self._files is None:  # the mode matters only across processes
            return Gauge(name, metric.help, labels, registry=None)
        return Gauge(name, metric.help, labels, registry=None, multiprocess_mode=self._mode(metric))

    def _child(self, metric: Metric, labels: Mapping[str, str]) -> Any:
        instrument = self._metrics.get(metric.name)
        if instrument is None:  # a custom metric, first seen now
            with self._lock:
                instrument = self._metrics.get(metric.name)
                if instrument is None:
                    instrument = self._metrics[metric.name] = self._build(metric)
        return instrument.labels(*labels.values()) if labels else instrument

    def _pushed(self) -> Iterator[Family]:
        if self._files is not None:
            yield from self._files.collect()
            return
        for instrument in list(self._metrics.values()):
            yield from instrument.collect()

    def _read_sources(self) -> list[Any]:
        series: dict[str, dict[tuple[str, ...], float]] = {}
        for source in list(self._sources):
            for sample in self._call(source):
                metric = self.catalog.get(sample.name)
                if metric is None or metric.type == "timer":
                    if sample.name not in self._rejected:
                        self._rejected.add(sample.name)
                        log.warning(
                            "source sample %r is not a catalog gauge or counter", sample.name
                        )
                    continue
                key = tuple(sanitize_value(sample.labels.get(label)) for label in metric.labels)
                by_labels = series.setdefault(metric.name, {})
                if key not in by_labels and len(by_labels) >= self.max_series:
                    key = (OVERFLOW,) * len(key)
                by_labels[key] = by_labels.get(key, 0.0) + float(sample.value)
        families = []
        for name, by_labels in series.items():
            metric = self.catalog.get(name)
            assert metric is not None
            family_type = CounterMetricFamily if metric.type == "counter" else GaugeMetricFamily
            family = family_type(family_name(metric), metric.help, labels=metric.labels)
            for key, value in sorted(by_labels.items()):
                family.add_metric(list(key), value)
            families.append(family)
            self._sourced.add(family.name)
        return families

    def _call(self, source: Source) -> list[Sample]:
        """A failing source costs its own samples, never the scrape."""
        try:
            samples = [Sample(*sample) for sample in source()]
        except Exception:
            first = id(source) not in self._failing_sources
            self._failing_sources.add(id(source))
            log.warning("metrics source %r failed", source, exc_info=first)
            return []
        self._failing_sources.discard(id(source))
        return samples


class _ScrapeCollector:
    """The registry's view of the backend: pushed values, then what sources read now."""

    def __init__(self, backend: PrometheusBackend) -> None:
        self._backend = backend

    def describe(self) -> Iterator[Family]:
        """Every catalog family, so the registry refuses a second claim on any name."""
        for metric in self._backend.catalog:
            name = family_name(metric)
            if metric.type == "counter":
                yield CounterMetricFamily(name, metric.help, labels=metric.labels)
            elif metric.type == "gauge":
                yield GaugeMetricFamily(name, metric.help, labels=metric.labels)
            else:
                yield HistogramMetricFamily(name, metric.help, labels=metric.labels)

    def collect(self) -> Iterator[Family]:
        sourced = self._backend._read_sources()
        hidden = self._backend._sourced
        for family in self._backend._pushed():
            if family.name not in hidden:
                yield family
        yield from sourced
