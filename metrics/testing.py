"""A backend that records what it receives: the test double shipped next to the real ones.

recorder = MemoryBackend()
stats = Stats([recorder], strict=True)
...
assert recorder.values("ti_failures") == [({"dag_id": "d", "task_id": "t"}, 1.0)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from metrics.catalog import Metric


class Emission(NamedTuple):
    """One value handed to a backend."""

    kind: str  # "count" | "gauge" | "gauge_delta" | "timing" | "forget"
    name: str
    value: float
    labels: dict[str, str]


class MemoryBackend:
    """Keeps every emission in order; `flushes` and `closed` tell what the facade called."""

    def __init__(self) -> None:
        self.emissions: list[Emission] = []
        self.flushes = 0
        self.closed = False

    def count(self, metric: Metric, value: float, labels: Mapping[str, str]) -> None:
        self.emissions.append(Emission("count", metric.name, value, dict(labels)))

    def gauge(
        self, metric: Metric, value: float, labels: Mapping[str, str], *, delta: bool
    ) -> None:
        kind = "gauge_delta" if delta else "gauge"
        self.emissions.append(Emission(kind, metric.name, value, dict(labels)))

    def timing(self, metric: Metric, seconds: float, labels: Mapping[str, str]) -> None:
        self.emissions.append(Emission("timing", metric.name, seconds, dict(labels)))

    def forget(self, metric: Metric, labels: Mapping[str, str]) -> None:
        self.emissions.append(Emission("forget", metric.name, 0.0, dict(labels)))

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True

    def values(self, name: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of every value of `name` emitted, in order (forgets left out)."""
        return [
            (e.labels, e.value) for e in self.emissions if e.name == name and e.kind != "forget"
        ]

    def forgotten(self, name: str) -> list[dict[str, str]]:
        """The labels of every series of `name` forgotten, in order."""
        return [e.labels for e in self.emissions if e.name == name and e.kind == "forget"]

    def clear(self) -> None:
        self.emissions.clear()
