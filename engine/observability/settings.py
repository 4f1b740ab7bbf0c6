"""The `metrics.*` configuration keys, as the settings `metrics.configure` takes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from metrics import MetricsSettings

if TYPE_CHECKING:
    from engine.config import Config


def _prefixes(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def metrics_settings(config: Config, *, serve: bool) -> MetricsSettings:
    """Settings for this process; only the scheduler (`serve`) opens the Prometheus port."""
    return MetricsSettings(
        statsd_on=config["metrics.statsd_on"],
        statsd_host=config["metrics.statsd_host"],
        statsd_port=config["metrics.statsd_port"],
        statsd_prefix=config["metrics.statsd_prefix"],
        statsd_tags_mode=config["metrics.statsd_tags"],
        otel_on=config["metrics.otel_on"],
        prometheus_on=config["metrics.prometheus_on"] and serve,
        prometheus_host=config["metrics.prometheus_host"],
        prometheus_port=config["metrics.prometheus_port"],
        prometheus_serve=serve,
        allow_list=_prefixes(config["metrics.allow_list"]),
        block_list=_prefixes(config["metrics.block_list"]),
    )
