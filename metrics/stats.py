"""The metrics facade: one call site for the engine, fanned out to every backend.

`Stats.incr("ti.finish", tags={...})` checks the name against the catalog, the labels
against the metric's, passes them through the guard, then hands the same values to each
backend. A metric call never raises into the caller, with one deliberate exception:
`strict=True` (the test suite) raises `UnknownMetric` for a name missing from the
catalog and `MetricMisuse` for a wrong call or wrong labels, so such a bug fails a test
instead of silently dropping data.

Custom metrics (user code in tasks) live under the `custom.` prefix and are otherwise
ordinary calls: `stats.incr("custom.rows_loaded", 42, tags={"team": "data"})`. The
first call fixes the metric's type and label names; any tag key is allowed (sanitised)
except the run-scoped ones the catalog forbids (run_id, hostname...), and the values go
through the same guard, so the per-metric cap bounds them too. Their names and labels are
user text: a facade given `redact` masks secrets in them before anything else sees them.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Literal, Protocol, TypeVar

from metrics.catalog import CATALOG, CUSTOM_PREFIX, Catalog, Metric, MetricType
from metrics.errors import MetricMisuse, MetricsError, UnknownMetric
from metrics.guard import MISSING, Guard, sanitize_key
from metrics.relay import Relayed

log = logging.getLogger(__name__)

Tags = Mapping[str, object] | None
Op = Literal["incr", "decr", "gauge", "timing"]
B = TypeVar("B")

#: Custom metric names one process may create; more would be unbounded names.
MAX_CUSTOM_METRICS = 200
#: Distinct problems logged per process; past that a flood of bad names stays quiet.
MAX_LOGGED = 1000
#: Which calls each metric type accepts: `incr`/`decr` on a gauge move it relatively.
_OPS: Mapping[MetricType, frozenset[Op]] = {
    "counter": frozenset({"incr"}),
    "gauge": frozenset({"gauge", "incr", "decr"}),
    "timer": frozenset({"timing"}),
}
_REPLAY_OPS: Mapping[str, Op] = {
    "count": "incr",
    "gauge": "gauge",
    "gauge_delta": "incr",
    "timing": "timing",
}
_CUSTOM_TYPE: Mapping[Op, MetricType] = {
    "incr": "counter",
    "decr": "gauge",
    "gauge": "gauge",
    "timing": "timer",
}


class Backend(Protocol):
    """What a backend implements; labels arrive sanitised, in the metric's label order.

    A backend that holds values may also offer `forget(metric, labels)`, to stop
    reporting one series of a gauge (`Stats.forget`); one without it is skipped.
    """

    def count(self, metric: Metric, value: float, labels: Mapping[str, str]) -> None: ...

    def gauge(
        self, metric: Metric, value: float, labels: Mapping[str, str], *, delta: bool
    ) -> None: ...

    def timing(self, metric: Metric, seconds: float, labels: Mapping[str, str]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class Timer:
    """Times a block and emits it as a timing on exit (also when the block raises).

    `tags` may be changed inside the block, e.g. once the outcome is known.
    """

    def __init__(self, stats: Stats | StatsProxy, name: str, tags: Tags = None) -> None:
        self._stats = stats
        self.name = name
        self.tags: dict[str, object] = dict(tags or {})
        self.duration: float | None = None
        self._start = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.duration = time.perf_counter() - self._start
        self._stats.timing(self.name, self.duration, self.tags)


class Stats:
    """The facade over a set of backends; see the module docstring for the rules."""

    def __init__(
        self,
        backends: Iterable[Backend] = (),
        *,
        strict: bool = False,
        allow: Iterable[str] = (),
        block: Iterable[str] = (),
        catalog: Catalog = CATALOG,
        guard: Guard | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.backends: tuple[Backend, ...] = tuple(backends)
        self.strict = strict
        self.catalog = catalog
        self.guard = guard or Guard(allow, block)
        #: masks secrets in what user code names: custom metrics' names, labels and values
        self.redact = redact
        self._custom: dict[str, Metric] = {}
        self._logged: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def incr(self, name: str, value: float = 1, tags: Tags = None) -> None:
        """Add to a counter (or move a gauge up)."""
        self._emit("incr", name, value, tags)

    def decr(self, name: str, value: float = 1, tags: Tags = None) -> None:
        """Move a gauge down; counters never go down."""
        self._emit("decr", name, value, tags)

    def gauge(self, name: str, value: float, tags: Tags = None) -> None:
        """Set a gauge."""
        self._emit("gauge", name, value, tags)

    def timing(self, name: str, seconds_or_timedelta: float | timedelta, tags: Tags = None) -> None:
        """Record a duration, in seconds or as a timedelta."""
        self._emit("timing", name, seconds_or_timedelta, tags)

    def forget(self, name: str, tags: Tags = None) -> None:
        """Stop reporting one series of a gauge: backends that hold values drop it (the
        last value set is still exported once), and the guard frees its slot."""
        try:
            if not self.guard.allowed(name):
                return
            metric = self._resolve("gauge", name, tags)
            labels = self.guard.clean(self._labels(metric, tags))
        except MetricsError as exc:
            if self.strict:
                raise
            self._log_once(name, type(exc).__name__, f"metric not forgotten: {exc}")
            return
        self.guard.release(metric.name, labels)
        for backend in self.backends:
            forget = getattr(backend, "forget", None)
            if forget is None:
                continue
            try:
                forget(metric, labels)
            except Exception:
                self._log_once(type(backend).__name__, "forget", f"forget failed on {name}")

    def timer(self, name: str, tags: Tags = None) -> Timer:
        """`with stats.timer("dagrun.dependency-check", tags={"dag_id": d}): ...`"""
        return Timer(self, name, tags)

    def replay(self, records: Iterable[Relayed]) -> None:
        """Emit what another process buffered in a `RelayBackend` (`metrics.relay`).

        The records passed that process's guard already; they pass this one's again, so
        the series cap holds for the sum of all processes.
        """
        for record in records:
            try:
                if record.name.startswith(CUSTOM_PREFIX):
                    self._declare_custom(record)
                op: Op = _REPLAY_OPS[record.kind]
                value = record.value
                if record.kind == "gauge_delta" and value < 0:
                    op, value = "decr", -value
                self._emit(op, record.name, value, dict(record.labels))
            except MetricsError as exc:
                if self.strict:
                    raise
                self._log_once(record.name, "replay", f"relayed metric dropped: {exc}")

    def _declare_custom(self, record: Relayed) -> None:
        """Give a relayed custom metric the type its process chose (a moved gauge is
        still a gauge, though `incr` alone would make a counter)."""
        with self._lock:
            if record.name in self._custom:
                return
            if len(self._custom) >= MAX_CUSTOM_METRICS:
                raise MetricMisuse(f"more than {MAX_CUSTOM_METRICS} custom metrics")
            labels = tuple(key for key, _ in record.labels)
            try:
                self._custom[record.name] = Metric.custom_metric(record.name, record.type, labels)
            except ValueError as exc:
                raise MetricMisuse(str(exc)) from None

    def get_backend(self, kind: type[B]) -> B | None:
        """The first backend of a class (the engine adds sources to the Prometheus one)."""
        return next((b for b in self.backends if isinstance(b, kind)), None)

    def flush(self) -> None:
        """Push out what backends buffer; call it at the end of a task attempt."""
        self._each_backend("flush")

    def close(self) -> None:
        """Flush and release sockets, threads and servers."""
        self._each_backend("close")

    def _each_backend(self, method: str) -> None:
        for backend in self.backends:
            try:
                getattr(backend, method)()
            except Exception:
                self._log_once(type(backend).__name__, method, f"metrics backend {method} failed")

    def _emit(self, op: Op, name: str, value: object, tags: Tags) -> None:
        try:
            if self.redact is not None and name.startswith(CUSTOM_PREFIX):
                name = self.redact(name)
            if not self.guard.allowed(name):
                return
            metric = self._resolve(op, name, tags)
            amount = _number(op, value)
            labels = self.guard.admit(metric.name, self._labels(metric, tags))
        except MetricsError as exc:
            if self.strict:
                raise
            self._log_once(name, type(exc).__name__, f"metric dropped: {exc}")
            return
        except Exception:
            self._log_once(name, "error", f"metric {name} dropped")
            return
        self._dispatch(op, metric, amount, labels)

    def _dispatch(self, op: Op, metric: Metric, amount: float, labels: dict[str, str]) -> None:
        for backend in self.backends:
            try:
                if op == "timing":
                    backend.timing(metric, amount, labels)
                elif metric.type == "counter":
                    backend.count(metric, amount, labels)
                else:
                    signed = -amount if op == "decr" else amount
                    backend.gauge(metric, signed, labels, delta=op != "gauge")
            except Exception:
                self._log_once(
                    type(backend).__name__, metric.name, f"metrics backend failed on {metric.name}"
                )

    def _resolve(self, op: Op, name: str, tags: Tags) -> Metric:
        metric = self.catalog.get(name)
        if metric is None and name.startswith(CUSTOM_PREFIX):
            metric = self._custom_metric(op, name, tags)
        if metric is None:
            raise UnknownMetric(
                f"{name!r} is not in the metrics catalog (metrics/catalog.py); "
                f"user metrics go under the {CUSTOM_PREFIX!r} prefix"
            )
        if op not in _OPS[metric.type]:
            raise MetricMisuse(f"{metric.name} is a {metric.type}: {op}() does not apply")
        return metric

    def _custom_metric(self, op: Op, name: str, tags: Tags) -> Metric:
        clean = _custom_name(name)
        labels = tuple(sorted(self._custom_labels(tags or {})))
        with self._lock:
            metric = self._custom.get(clean)
            if metric is None:
                if len(self._custom) >= MAX_CUSTOM_METRICS:
                    raise MetricMisuse(f"more than {MAX_CUSTOM_METRICS} custom metrics")
                try:
                    metric = Metric.custom_metric(clean, _CUSTOM_TYPE[op], labels)
                except ValueError as exc:  # a run-scoped tag such as run_id or hostname
                    raise MetricMisuse(str(exc)) from None
                self._custom[clean] = metric
        if metric.labels != labels:
            raise MetricMisuse(f"{clean} was first emitted with labels {metric.labels}")
        return metric

    def _labels(self, metric: Metric, tags: Tags) -> dict[str, object]:
        given = self._custom_labels(tags) if metric.custom and tags else tags
        given = given or {}
        unknown = set(given) - set(metric.labels)
        missing = set(metric.labels) - set(given)
        if unknown or missing:
            problem = MetricMisuse(
                f"{metric.name} takes labels {metric.labels}; "
                f"unknown {sorted(unknown)}, missing {sorted(missing)}"
            )
            if self.strict:
                raise problem
            self._log_once(metric.name, "labels", str(problem))
        return {label: given.get(label, MISSING) for label in metric.labels}

    def _custom_labels(self, tags: Mapping[str, object]) -> dict[str, object]:
        """A custom metric's labels: user text, so secrets are masked before sanitising."""
        redact = self.redact
        if redact is None:
            return {sanitize_key(key): value for key, value in tags.items()}
        return {
            sanitize_key(redact(str(key))): value if value is None else redact(str(value))
            for key, value in tags.items()
        }

    def _log_once(self, name: str, kind: str, message: str) -> None:
        with self._lock:
            if (name, kind) in self._logged or len(self._logged) >= MAX_LOGGED:
                return
            self._logged.add((name, kind))
        log.warning(message, exc_info=kind not in ("labels", "UnknownMetric", "MetricMisuse"))


def _custom_name(name: str) -> str:
    """`custom.` plus the rest in lowercase words: valid in every backend's naming rules."""
    rest = re.sub(r"[^a-z0-9_.]", "_", name[len(CUSTOM_PREFIX) :].lower())
    rest = re.sub(r"\.{2,}", ".", rest).strip("._")[:100].rstrip(".")
    rest = re.sub(r"_(total|count|sum|bucket|created|info)$", "", rest)  # Prometheus' suffixes
    if not rest or not rest[0].isalpha():
        raise MetricMisuse(f"{name!r}: a custom metric name must start with a letter")
    return CUSTOM_PREFIX + rest


def _number(op: Op, value: object) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetricMisuse(f"{op}() needs a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise MetricMisuse(f"{op}() needs a finite number, got {value!r}")
    if op == "timing":
        return max(number, 0.0)  # a clock step backwards is not a negative duration
    if op in ("incr", "decr") and number < 0:
        raise MetricMisuse(f"{op}() needs a non-negative amount, got {value!r}")
    return number


class StatsProxy:
    """`metrics.stats`: the configured Stats for this process, a no-op until `configure()`.

    User code imports it at module level (`from metrics import stats`), before anything
    is configured, so it forwards every call to whatever is installed at call time.
    """

    def __init__(self) -> None:
        self._target: Stats = Stats()

    def install(self, target: Stats | None) -> None:
        """Make `target` the process's Stats (None: back to the no-op); closes the old one."""
        previous, self._target = self._target, target or Stats()
        if previous is not self._target:
            previous.close()

    @property
    def target(self) -> Stats:
        return self._target

    def incr(self, name: str, value: float = 1, tags: Tags = None) -> None:
        self._target.incr(name, value, tags)

    def decr(self, name: str, value: float = 1, tags: Tags = None) -> None:
        self._target.decr(name, value, tags)

    def gauge(self, name: str, value: float, tags: Tags = None) -> None:
        self._target.gauge(name, value, tags)

    def timing(self, name: str, seconds_or_timedelta: float | timedelta, tags: Tags = None) -> None:
        self._target.timing(name, seconds_or_timedelta, tags)

    def timer(self, name: str, tags: Tags = None) -> Timer:
        return Timer(self, name, tags)

    def forget(self, name: str, tags: Tags = None) -> None:
        self._target.forget(name, tags)

    def replay(self, records: Iterable[Relayed]) -> None:
        self._target.replay(records)

    def flush(self) -> None:
        self._target.flush()

    def close(self) -> None:
        self._target.close()
