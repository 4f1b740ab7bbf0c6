"""SLAs & alerts: misses, runs at risk, predicted slack, and whether alerts reach people."""

from __future__ import annotations

from metrics.mixin.dashboards.common import DAG, DAG_VARIABLES, DT, p50_p95
from metrics.mixin.grafana import Dashboard, Panel, Row, q
from metrics.mixin.promql import RANGE, gauge, increase


def _misses() -> Row:
    return Row(
        "SLAs and deadlines",
        [
            Panel(
                "SLA misses in range",
                "Task SLA misses raised over the dashboard's time range. Any: see runbook "
                "DagwatchSlaMissed.",
                [q(increase("sla_missed", window=RANGE, filters=DT), "SLA misses")],
                "short",
                kind="stat",
                width=6,
                thresholds=((1, "red"),),
            ),
            Panel(
                "Deadline misses in range",
                "DAG run deadlines missed over the dashboard's time range.",
                [q(increase("deadline.missed", window=RANGE, filters=DAG), "deadline misses")],
                "short",
                kind="stat",
                width=6,
                thresholds=((1, "red"),),
            ),
            Panel(
                "Runs at risk",
                "Running runs forecast to miss their deadline now. Act before the miss: "
                "runbook DagwatchDeadlineAtRisk.",
                [q(gauge("deadline.at_risk", labels=DAG, filters=DAG, how="max"), "{{dag_id}}")],
                "short",
                kind="stat",
                width=12,
                thresholds=((1, "orange"),),
            ),
            Panel(
                "SLA misses per task",
                "SLA misses per task over the rate window. The same task every day: "
                "its SLA is wrong or it needs to start earlier.",
                [q(increase("sla_missed", labels=DT, filters=DT), "{{dag_id}}.{{task_id}}")],
                "short",
            ),
            Panel(
                "Predicted slack",
                "Seconds left before the nearest deadline of each DAG's runs (negative "
                "once missed). Falling towards 0: the run will be late.",
                [
                    q(
                        gauge("deadline.slack_seconds", labels=DAG, filters=DAG, how="min"),
                        "{{dag_id}}",
                    )
                ],
                "s",
            ),
        ],
    )


def _delivery() -> Row:
    return Row(
        "Alert delivery",
        [
            Panel(
                "Deliveries by channel",
                "Notifications delivered, not delivered after alerts.max_attempts tries, and "
                "suppressed, per channel. Any failed: pages are late, still retried until "
                "alerts.max_age (runbook DagwatchAlertDeliveriesFailing).",
                [
                    q(increase("alert.delivered", labels=("channel",)), "{{channel}} sent"),
                    q(increase("alert.failed", labels=("channel",)), "{{channel}} failed"),
                    q(increase("alert.suppressed", labels=("channel",)), "{{channel}} suppressed"),
                ],
                "short",
            ),
            Panel(
                "Delivery latency p50 / p95",
                "Seconds from the event to its delivery, per channel. High: the channel "
                "is slow or retries (see the failed count).",
                p50_p95("alert.delivery_latency", ("channel",), "{{channel}}"),
                "s",
            ),
            Panel(
                "Failed deliveries by route and event",
                "Which route and event lost notifications: check that route's URL "
                "(`dagwatch alerts test --route NAME`).",
                [
                    q(
                        increase("alert.failed", labels=("route", "event"), window=RANGE),
                        "{{route}} {{event}}",
                    )
                ],
                "short",
                kind="table",
                width=24,
            ),
        ],
    )


def dashboard() -> Dashboard:
    """Misses, runs at risk, slack, and whether alerts reach people."""
    return Dashboard(
        "dagwatch-slas",
        "dagwatch / SLAs & alerts",
        "SLA and deadline misses, runs at risk, predicted slack, alert delivery.",
        [_misses(), _delivery()],
        DAG_VARIABLES,
    )
