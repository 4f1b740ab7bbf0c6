"""Relaying metrics from short-lived processes to the long-lived one that owns the backends.

A task attempt runs in a process of its own that lives for a few milliseconds to a few
hours. Giving each one its own backends goes wrong in three ways peers know well: a
Prometheus endpoint cannot serve a process that is gone, an OpenTelemetry meter
provider must be rebuilt after fork and flushed before exit (or its last values are
lost), and every attempt costs a connection and an export. So an attempt process
installs a `RelayBackend`: it keeps what the attempt emits in memory, already checked
against the catalog and the guard, with counters summed and gauges reduced to their
last value. When the attempt ends, the executor carries `drain()` back to the scheduler,
which hands it to `Stats.replay()` and so to every configured backend.

The buffer is bounded: past `max_timings` durations, further ones are dropped and
counted, so a task that emits in a tight loop cannot exhaust memory.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NamedTuple

from metrics.catalog import Metric, MetricType

log = logging.getLogger(__name__)

#: Durations kept per attempt; counters and gauges take one entry per label set anyway.
MAX_TIMINGS = 10_000


class Relayed(NamedTuple):
    """One aggregated emission, plain data so it pickles across processes."""

    kind: str  # "count" | "gauge" | "gauge_delta" | "timing"
    name: str
    type: MetricType
    value: float
    labels: tuple[tuple[str, str], ...]


class RelayBackend:
    """A backend that buffers, for `Stats.replay()` in another process."""

    def __init__(self, max_timings: int = MAX_TIMINGS) -> None:
        self.max_timings = max_timings
        self._sums: dict[tuple[str, str, MetricType, tuple[tuple[str, str], ...]], float] = {}
        self._timings: list[Relayed] = []
        self.dropped = 0

    def count(self, metric: Metric, value: float, labels: Mapping[str, str]) -> None:
        self._add("count", metric, value, labels)

    def gauge(
        self, metric: Metric, value: float, labels: Mapping[str, str], *, delta: bool
    ) -> None:
        if delta:
            self._add("gauge_delta", metric, value, labels)
            return
        key = (metric.name, metric.type, tuple(labels.items()))
        # A set value replaces what came before it, moves included.
        self._sums.pop(("gauge_delta", *key), None)
        self._sums[("gauge", *key)] = value

    def timing(self, metric: Metric, seconds: float, labels: Mapping[str, str]) -> None:
        if len(self._timings) >= self.max_timings:
            self.dropped += 1
            return
        self._timings.append(
            Relayed("timing", metric.name, metric.type, seconds, tuple(labels.items()))
        )

    def drain(self) -> list[Relayed]:
        """Everything buffered, in a stable order; the buffer starts empty again."""
        out = [
            Relayed(kind, name, type_, value, labels)
            for (kind, name, type_, labels), value in self._sums.items()
        ]
        out += self._timings
        if self.dropped:
            log.warning("metrics relay dropped %d durations past its cap", self.dropped)
        self._sums, self._timings, self.dropped = {}, [], 0
        return out

    def flush(self) -> None:
        """Nothing leaves until `drain()`: the owning process decides when."""

    def close(self) -> None:
        self._sums.clear()
        self._timings.clear()

    def _add(self, kind: str, metric: Metric, value: float, labels: Mapping[str, str]) -> None:
        key = (kind, metric.name, metric.type, tuple(labels.items()))
        self._sums[key] = self._sums.get(key, 0.0) + value
