"""PromQL built from catalog names, so a dashboard or rule cannot name a metric that is gone.

`series("ti.finish")` is `dagwatch_ti_finish_total`, derived by the catalog; an unknown
name raises KeyError when the mixin is generated, long before a panel shows nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from metrics.catalog import CATALOG, Catalog

#: The variables a dashboard may filter on, as Grafana substitutes them (regex, All = .*).
VARIABLE_MATCHERS = {
    "dag_id": 'dag_id=~"$dag_id"',
    "task_id": 'task_id=~"$task_id"',
    "pool": 'pool=~"$pool"',
}
#: Grafana's rate window: at least four scrape intervals, whatever the zoom.
RATE_WINDOW = "$__rate_interval"
#: The whole time range of the dashboard, for totals over it.
RANGE = "$__range"


def series(name: str, suffix: str = "", catalog: Catalog = CATALOG) -> str:
    """The Prometheus name of catalog metric `name` (`_bucket`, `_sum`, `_count` for timers)."""
    metric = catalog.get(name)
    if metric is None:
        raise KeyError(f"{name!r} is not in the metric catalog")
    if suffix and metric.type != "timer":
        raise ValueError(f"{name!r} is a {metric.type}: it has no {suffix} series")
    return metric.prometheus_name + suffix


def select(name: str, *matchers: str, filters: Iterable[str] = (), suffix: str = "") -> str:
    """`name{matchers}`, plus the dashboard variables in `filters` the metric has as labels."""
    metric = CATALOG.get(name)
    if metric is None:
        raise KeyError(f"{name!r} is not in the metric catalog")
    chosen = [VARIABLE_MATCHERS[label] for label in filters if label in metric.labels]
    inside = ",".join([*chosen, *matchers])
    return f"{series(name, suffix)}{{{inside}}}" if inside else series(name, suffix)


def by(labels: Iterable[str]) -> str:
    labels = list(labels)
    return f" by ({', '.join(labels)})" if labels else ""


def rate(name: str, *matchers: str, labels: Iterable[str] = (), filters: Iterable[str] = ()) -> str:
    """Per-second rate of a counter, summed by `labels`."""
    inner = select(name, *matchers, filters=filters)
    return f"sum{by(labels)} (rate({inner}[{RATE_WINDOW}]))"


def increase(
    name: str,
    *matchers: str,
    window: str = RATE_WINDOW,
    labels: Iterable[str] = (),
    filters: Iterable[str] = (),
) -> str:
    """How much a counter grew over `window`, counting series born inside it.

    dagwatch creates a labelled counter at its first increment, so a series that starts
    at 1 has no earlier sample and `increase()` alone reads it as 0: the first failure
    of a task would never count. A series absent `window` ago is counted whole (its
    value is all it grew since it appeared, or since its process restarted).
    """
    return f"sum{by(labels)} ({_grown(select(name, *matchers, filters=filters), window)})"


def _grown(inner: str, window: str) -> str:
    # `or` keeps the left side's series: the born-inside case must come first, since
    # increase() of a new series exists too (and reads 0)
    return f"({inner} unless {inner} offset {window}) or increase({inner}[{window}])"


def quantile(
    q: float,
    name: str,
    *matchers: str,
    labels: Iterable[str] = (),
    filters: Iterable[str] = (),
    window: str = RATE_WINDOW,
) -> str:
    """The q-quantile of a timer's histogram over `window`, per `labels`; buckets born
    inside the window count whole (see `increase`), so a task's first run is shown."""
    inner = select(name, *matchers, filters=filters, suffix="_bucket")
    return f"histogram_quantile({q}, sum{by(['le', *labels])} ({_grown(inner, window)}))"


def mean(name: str, *matchers: str, labels: Iterable[str] = ()) -> str:
    """A timer's mean since its process started, per `labels` (for rare observations,
    such as the import of a DAG file that seldom changes)."""
    total = select(name, *matchers, suffix="_sum")
    count = select(name, *matchers, suffix="_count")
    return f"sum{by(labels)} ({total}) / sum{by(labels)} ({count})"


def gauge(
    name: str,
    *matchers: str,
    labels: Iterable[str] = (),
    filters: Iterable[str] = (),
    how: str = "sum",
) -> str:
    """A gauge aggregated by `labels` (`sum` over scrape targets by default)."""
    return f"{how}{by(labels)} ({select(name, *matchers, filters=filters)})"
