"""What the dashboards share: the scrape job, the template variables, a quantile pair."""

from __future__ import annotations

from collections.abc import Sequence

from metrics.mixin.grafana import Query, Variable, q
from metrics.mixin.promql import quantile, series

#: The job name of the shipped scrape config (dashboards/prometheus/prometheus.yml).
SCRAPE_JOB = "dagwatch"
DT = ("dag_id", "task_id")
DAG = ("dag_id",)
POOL = ("pool",)

DAG_VARIABLES = (
    Variable("dag_id", "DAG", f"label_values({series('ti.start')}, dag_id)"),
    Variable(
        "task_id", "Task", f'label_values({series("ti.start")}{{dag_id=~"$dag_id"}}, task_id)'
    ),
)
POOL_VARIABLE = Variable("pool", "Pool", f"label_values({series('pool.open_slots')}, pool)")


def p50_p95(
    name: str, labels: Sequence[str], legend: str, filters: Sequence[str] = ()
) -> list[Query]:
    """The median and 95th percentile of a timer, as two queries of one panel."""
    return [
        q(quantile(0.5, name, labels=labels, filters=filters), f"{legend} p50"),
        q(quantile(0.95, name, labels=labels, filters=filters), f"{legend} p95"),
    ]
