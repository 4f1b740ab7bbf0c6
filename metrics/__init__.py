"""dagwatch metrics: one facade, a catalog of every metric, StatsD/OTel/Prometheus backends.

    from metrics import stats
    stats.incr("custom.rows_loaded", 42, tags={"team": "data"})

`stats` is a no-op until the process calls `configure(settings)` (the CLI does, at the
edge). Importing this package is cheap and does nothing: the backends, and the
libraries under them, are imported by `configure` only when they are switched on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from metrics.catalog import CATALOG, CUSTOM_PREFIX, Catalog, Metric, Sample
from metrics.errors import DuplicateMetric, MetricMisuse, MetricsError, UnknownMetric
from metrics.stats import Backend, Stats, StatsProxy, Timer

__all__ = [
    "CATALOG",
    "CUSTOM_PREFIX",
    "Backend",
    "Catalog",
    "DuplicateMetric",
    "Metric",
    "MetricMisuse",
    "MetricsError",
    "MetricsSettings",
    "Sample",
    "Stats",
    "Timer",
    "UnknownMetric",
    "configure",
    "render_catalog_rows",
    "stats",
]

log = logging.getLogger(__name__)

#: The process's facade: forwards to the Stats installed by `configure()`.
stats = StatsProxy()


@dataclass(frozen=True)
class MetricsSettings:
    """What `configure` needs, as plain values (the engine maps its `metrics.*` keys here)."""

    statsd_on: bool = False
    statsd_host: str = "127.0.0.1"
    statsd_port: int = 8125
    statsd_prefix: str = "dagwatch"
    statsd_tags_mode: str = "none"  # none | dogstatsd | influxdb
    otel_on: bool = False  # endpoint, service name, interval: the standard OTEL_* variables
    prometheus_on: bool = False
    prometheus_host: str = "127.0.0.1"
    prometheus_port: int = 9112
    #: Serve /metrics and /health from this process (the scheduler); workers only write.
    prometheus_serve: bool = True
    #: Multiprocess mode: task attempts' values reach the scheduler's scrape through it.
    prometheus_multiproc_dir: Path | None = None
    allow_list: tuple[str, ...] = ()
    block_list: tuple[str, ...] = ()
    strict: bool = False


def configure(
    settings: MetricsSettings,
    *,
    environ: Mapping[str, str] | None = None,
    redact: Callable[[str], str] | None = None,
) -> Stats:
    """Build the backends that are on, install them behind `metrics.stats`, return them.

    `environ` feeds the OTel backend's OTEL_* variables (default: os.environ); `redact`
    masks secrets in custom metrics' names and labels (the engine's masker). With
    Prometheus multiprocess mode, the serving process empties the directory first, so
    call this before starting any worker.
    """
    backends: list[Backend] = []
    try:
        if settings.statsd_on:
            from metrics.statsd import TAGS_MODES, StatsdBackend

            mode = settings.statsd_tags_mode
            if mode not in TAGS_MODES:
                raise ValueError(f"statsd tags mode {mode!r}: allowed values: {TAGS_MODES}")
            backends.append(
                StatsdBackend(
                    settings.statsd_host, settings.statsd_port, settings.statsd_prefix, mode
                )
            )
        if settings.otel_on:
            from metrics.otel import OtelBackend

            backends.append(OtelBackend(environ=environ))
        if settings.prometheus_on:
            backends.append(_prometheus(settings))
    except Exception:
        for backend in backends:
            backend.close()
        raise
    configured = Stats(
        backends,
        strict=settings.strict,
        allow=settings.allow_list,
        block=settings.block_list,
        redact=redact,
    )
    stats.install(configured)
    configured.gauge("build_info", 1, tags={"version": _version()})
    return configured


def _prometheus(settings: MetricsSettings) -> Backend:
    from prometheus_client import CollectorRegistry

    from metrics.prometheus import PrometheusBackend

    backend = PrometheusBackend(
        CollectorRegistry(),
        multiproc_dir=settings.prometheus_multiproc_dir,
        clear_multiproc_dir=settings.prometheus_serve,
    )
    if settings.prometheus_serve:
        backend.serve(settings.prometheus_host, settings.prometheus_port)
    return backend


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("dagwatch")
    except metadata.PackageNotFoundError:
        return "unknown"


def render_catalog_rows(catalog: Catalog = CATALOG) -> list[dict[str, str]]:
    """One row per metric for `dagwatch metrics catalog` (table or JSON)."""
    return [
        {
            "name": metric.name,
            "type": metric.type,
            "unit": metric.unit,
            "labels": ",".join(metric.labels),
            "legacy_name": metric.statsd_template,
            "prometheus_name": metric.prometheus_name,
            "when_gone": metric.when_gone if metric.type == "gauge" else "",
            "help": metric.help,
        }
        for metric in catalog
    ]
