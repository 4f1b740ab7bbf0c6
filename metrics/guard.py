"""The cardinality and safety guard every emitted value passes before any backend.

A DAG id is user input: it can be long, hold spaces or slashes, and a loop that emits
per item can mint thousands of label values. Each of those would be a new time series
in Prometheus and a new name in StatsD, so values are sanitised, bounded in length,
and each metric holds a bounded number of label sets; past the cap, values fold into
one `__overflow__` series (logged once) instead of growing without end.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Iterable, Mapping

from metrics.catalog import template_fields

log = logging.getLogger(__name__)

#: Longest label value kept whole; longer ones are cut and suffixed with a short hash.
MAX_VALUE_LENGTH = 100
#: Distinct label sets a metric may hold in one process before values fold into overflow.
MAX_SERIES_PER_METRIC = 1000
#: Airflow's stat name validator rejects longer names; StatsD servers truncate or drop them.
MAX_STATSD_NAME_LENGTH = 250
OVERFLOW = "__overflow__"
#: The value of a label the caller did not give (non-strict mode only).
MISSING = "none"

_UNSAFE_VALUE = re.compile(r"[^A-Za-z0-9_.\-]")
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_]")
_RESERVED_KEYS = frozenset({"le", "quantile"})  # Prometheus histogram and summary labels


def shorten(text: str, limit: int) -> str:
    """Cut `text` to `limit` characters, ending with a hash so two cut values stay apart."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    if limit <= len(digest) + 1:
        return digest[:limit]
    return f"{text[: limit - len(digest) - 1]}_{digest}"


def sanitize_value(value: object, limit: int = MAX_VALUE_LENGTH) -> str:
    """A label value safe for every backend: only [A-Za-z0-9_.-], at most `limit` long."""
    text = "" if value is None else str(value)
    if not text:
        return MISSING
    return shorten(_UNSAFE_VALUE.sub("_", text), limit)


def sanitize_key(key: object) -> str:
    """A label name valid in Prometheus, OTel and StatsD tags (for custom metrics' tags)."""
    text = _UNSAFE_KEY.sub("_", str(key)).strip("_").lower()[:50]
    if not text or text[0].isdigit() or text in _RESERVED_KEYS:
        text = f"tag_{text}"
    return text


def legacy_name(template: str, labels: Mapping[str, str], limit: int) -> str:
    """Fill a legacy StatsD template, never longer than `limit`.

    Dots inside values become `_`: a dot separates name segments, and statsd_exporter's
    glob mapping matches one segment per variable.
    """
    values = {key: value.replace(".", "_") for key, value in labels.items()}
    fields = template_fields(template)
    name = template.format_map(values)
    if len(name) <= limit or not fields:
        return name[:limit]
    fixed = len(template.format_map(dict.fromkeys(values, "")))
    budget = max(1, (limit - fixed) // len(fields))
    return template.format_map({k: shorten(v, budget) for k, v in values.items()})[:limit]


def matches_prefix(name: str, prefixes: Iterable[str]) -> bool:
    return any(name.startswith(prefix) for prefix in prefixes)


class Guard:
    """Name filters and the per-metric cap on label sets, shared by every backend."""

    def __init__(
        self,
        allow: Iterable[str] = (),
        block: Iterable[str] = (),
        *,
        max_series: int = MAX_SERIES_PER_METRIC,
        max_value_length: int = MAX_VALUE_LENGTH,
    ) -> None:
        self.allow = tuple(p.strip() for p in allow if p.strip())
        self.block = tuple(p.strip() for p in block if p.strip())
        self.max_series = max_series
        self.max_value_length = max_value_length
        self._decisions: dict[str, bool] = {}
        self._series: dict[str, set[tuple[str, ...]]] = {}
        self._overflowed: set[str] = set()
        self._lock = threading.Lock()

    def allowed(self, name: str) -> bool:
        """Airflow's metrics_allow_list / metrics_block_list: prefixes of the dotted name.

        An empty allow list allows everything; the block list applies after it.
        """
        decision = self._decisions.get(name)
        if decision is None:
            decision = (not self.allow or matches_prefix(name, self.allow)) and not (
                matches_prefix(name, self.block)
            )
            self._decisions[name] = decision
        return decision

    def clean(self, labels: Mapping[str, object]) -> dict[str, str]:
        """The labels sanitised, without taking a slot for them."""
        return {key: sanitize_value(value, self.max_value_length) for key, value in labels.items()}

    def admit(self, name: str, labels: Mapping[str, object]) -> dict[str, str]:
        """Sanitised labels, or the overflow series once `name` holds `max_series` sets."""
        clean = self.clean(labels)
        if not clean:
            return clean
        key = tuple(clean.values())
        with self._lock:
            seen = self._series.setdefault(name, set())
            if key in seen:
                return clean
            if len(seen) < self.max_series:
                seen.add(key)
                return clean
            first_overflow = name not in self._overflowed
            self._overflowed.add(name)
        if first_overflow:
            log.warning(
                "metric %s reached %d label sets; further ones are folded into %s",
                name,
                self.max_series,
                OVERFLOW,
                extra={"action": "metric_overflow", "metric": name},
            )
        return dict.fromkeys(clean, OVERFLOW)

    def release(self, name: str, labels: Mapping[str, str]) -> None:
        """Free the slot of a series the backends forgot (sanitised labels, as `admit`
        returned them), so gauges whose series come and go stay under the cap."""
        with self._lock:
            self._series.get(name, set()).discard(tuple(labels.values()))
