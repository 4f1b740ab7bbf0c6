"""Gauges sent as a whole set each round, so a series that goes away is said to be gone.

Push backends know only the values they are sent: when nothing reports a series any
more (no task instance of a task is running, a DAG file was deleted), statsd_exporter
keeps showing its last value and the OpenTelemetry SDK keeps exporting it. The owner of
a set of gauges (the metastore pusher, the scheduler loop, the deadline forecast) sends
every current series each round through a `GaugeSet`, which remembers the series of the
round before; one missing from a round is handled by its metric's `when_gone` rule
(`metrics.catalog.Metric`):

- "zero": sent as 0 in that round, then forgotten in the next if still missing;
- "drop": forgotten at once, with no last value.

Forgetting goes through `Stats.forget`: OpenTelemetry exports the series no more (after
its last value), a pushed Prometheus series is removed, StatsD is simply no longer sent
it, and the guard frees its slot. So the memory is the last round's series plus the
ones zeroed in it, however many series come and go.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from metrics.catalog import CATALOG, Catalog, Sample

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


class GaugeTarget(Protocol):
    """What a GaugeSet sends to: `metrics.Stats` or the process's `metrics.stats`."""

    def gauge(self, name: str, value: float, tags: dict[str, str] | None = None) -> None: ...

    def forget(self, name: str, tags: dict[str, str] | None = None) -> None: ...


class GaugeSet:
    """One owner's gauges: `send()` each round's complete set of samples."""

    def __init__(self, target: GaugeTarget, catalog: Catalog = CATALOG) -> None:
        self.target = target
        self.catalog = catalog
        self._sent: set[SeriesKey] = set()
        self._zeroed: set[SeriesKey] = set()

    def send(self, samples: Iterable[Sample]) -> None:
        """Send every sample; zero or forget the series of the last round not among them."""
        current: dict[SeriesKey, float] = {}
        for sample in samples:
            current[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        gone = self._sent - current.keys()
        zeroed = {key for key in gone if self._rule(key[0]) == "zero"}
        # forget first: the guard's slots they free may be needed by this round's series
        for name, labels in sorted((self._zeroed - current.keys()) | (gone - zeroed)):
            self.target.forget(name, tags=dict(labels))
        for (name, labels), value in current.items():
            self.target.gauge(name, value, tags=dict(labels))
        for name, labels in sorted(zeroed):
            self.target.gauge(name, 0, tags=dict(labels))
        self._sent, self._zeroed = set(current), zeroed

    @property
    def remembered(self) -> int:
        """Series this set remembers: the last round's and those it zeroed."""
        return len(self._sent) + len(self._zeroed)

    def _rule(self, name: str) -> str:
        metric = self.catalog.get(name)
        return metric.when_gone if metric is not None else "zero"
