"""The metrics package's exceptions: one base, so callers can catch it at one level."""

from __future__ import annotations


class MetricsError(Exception):
    """A metric was declared or emitted against the catalog's rules."""


class DuplicateMetric(MetricsError, ValueError):
    """Two metrics claim the same name (canonical, Prometheus or legacy StatsD)."""


class UnknownMetric(MetricsError, KeyError):
    """A name that is neither in the catalog nor under the `custom.` prefix (strict mode)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else self.__doc__ or ""


class MetricMisuse(MetricsError, TypeError):
    """A catalog metric emitted with the wrong call (type) or labels (strict mode)."""
