"""Metrics for a long-lived dagwatch process: configure the backends, plug the engine in.

The scheduler serves `/metrics` and `/health` (when Prometheus is on), reads the
metastore gauges at scrape time (and pushes them to StatsD and OpenTelemetry from a
thread every few seconds), and replays what attempt processes relay to it. A
separate `dagwatch dag-processor` sends to StatsD and OpenTelemetry only: the files it
parses reach Prometheus through the scheduler's metastore collector.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import metrics
from engine import masking
from engine.exceptions import DagwatchError
from engine.observability import emit
from engine.observability.settings import metrics_settings
from metrics.gauges import GaugeSet

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.db import Store
    from metrics.server import MetricsServer

log = logging.getLogger(__name__)


class Telemetry:
    """This process's metrics: its facade and, in the scheduler, its HTTP server."""

    def __init__(
        self, config: Config, store: Store, *, serve: bool, environ: Mapping[str, str] | None = None
    ) -> None:
        self.config = config
        self.store = store
        settings = metrics_settings(config, serve=serve)
        try:
            self.stats = metrics.configure(settings, environ=environ, redact=masking.redact)
        except OSError as exc:  # the port is taken, or the host is not ours
            where = f"{settings.prometheus_host}:{settings.prometheus_port}"
            raise DagwatchError(
                f"cannot serve /metrics on {where} (metrics.prometheus_host, "
                f"metrics.prometheus_port): {exc.strerror or exc}"
            ) from None
        self.server: MetricsServer | None = None
        self._pusher: GaugePusher | None = None
        if serve and self.stats.backends:
            self._serve_metastore_gauges(settings)
        on = [name for name in ("statsd", "otel", "prometheus") if getattr(settings, f"{name}_on")]
        log.info("metrics backends: %s", ", ".join(on) or "none")

    def _serve_metastore_gauges(self, settings: metrics.MetricsSettings) -> None:
        """One reader of the metastore gauges: Prometheus calls it at each scrape, a
        thread pushes its values to the other backends."""
        from engine.observability.collector import metastore_source

        source = metastore_source(self.store, self.config)
        if self.config["core.executor"] == "celery":
            from engine.observability.workers import with_workers

            source = with_workers(source, self.store, self.config)
        prometheus = None
        if settings.prometheus_on:
            from metrics.prometheus import PrometheusBackend

            prometheus = self.stats.get_backend(PrometheusBackend)
        if prometheus is not None:
            prometheus.add_source(source)
            self.server = prometheus.server
        pushed = [backend for backend in self.stats.backends if backend is not prometheus]
        if pushed:
            target = metrics.Stats(pushed, guard=self.stats.guard)
            self._pusher = GaugePusher(source, target, skip=emit.LOOP_GAUGES)
            self._pusher.start()

    @property
    def url(self) -> str | None:
        """Where /metrics and /health are served, if they are."""
        return self.server.url if self.server is not None else None

    def watch_scheduler(self, scheduler: Any) -> None:
        """Add the scheduler's health checks: its heartbeat, parsing, its executor."""
        if self.server is None:
            return
        from engine.observability.health import health_source, install_health_checks
        from metrics.prometheus import PrometheusBackend

        install_health_checks(
            self.server,
            self.store,
            self.config,
            executor=scheduler.executor,
            job_id=lambda: scheduler.job_id,
        )
        if getattr(scheduler.executor, "name", None) == "celery":
            from engine.observability.workers import workers_check

            self.server.add_health_check("workers", workers_check(self.store, self.config))
        prometheus = self.stats.get_backend(PrometheusBackend)
        if prometheus is not None:
            prometheus.add_source(health_source(self.server))

    def close(self) -> None:
        """Flush what is buffered (OpenTelemetry), stop serving, back to the no-op facade."""
        if self._pusher is not None:
            self._pusher.stop()
        metrics.stats.install(None)


class GaugePusher:
    """Sends the metastore gauges (pool slots by state, task instances by state and
    task, import errors...) to StatsD and OpenTelemetry every `interval` seconds, from a
    thread of its own: Prometheus reads them at scrape time, push backends need them
    pushed, and the scheduler's tick must not pay for the queries. Each push is the whole
    set (`metrics.gauges.GaugeSet`): a series the metastore no longer shows is zeroed
    once or dropped, as the catalog says for its metric."""

    def __init__(
        self,
        source: Callable[[], Iterable[Any]],
        target: metrics.Stats,
        interval: float = 5.0,
        *,
        skip: Iterable[str] = (),
    ) -> None:
        self.source = source
        self.target = target
        self.interval = interval
        #: names another emitter owns (the scheduler loop's gauges): one value per name
        self.skip = frozenset(skip)
        self.gauges = GaugeSet(target)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dagwatch-gauges", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval)

    def push_once(self) -> None:
        """One push; a source that fails sends nothing, so nothing is zeroed by mistake."""
        samples = [sample for sample in self.source() if sample.name not in self.skip]
        self.gauges.send(samples)

    def _run(self) -> None:
        while True:  # at once, then every interval: dashboards have values from the start
            try:
                self.push_once()
            except Exception as exc:  # the metastore is away: the next round tries again
                log.warning("could not read the metastore gauges: %s", type(exc).__name__)
            if self._stop.wait(self.interval):
                return
