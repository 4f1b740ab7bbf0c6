"""Prometheus alert rules, each with a severity, a summary, a description, a runbook
section in docs/runbooks.md and the dashboard to open.

The links are absolute because Alertmanager shows them outside the repository:
`runbook_base` is where docs/runbooks.md is published, `grafana_url` where Grafana
runs; `python -m metrics.mixin --runbook-base URL --grafana-url URL` writes rules
with yours. Each rule's `for` is what an on-call engineer should wait before a page.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from metrics.mixin.dashboards import SCRAPE_JOB
from metrics.mixin.promql import gauge, increase, quantile, series

#: A placeholder (`.invalid` never resolves): set yours when generating.
DEFAULT_RUNBOOK_BASE = "https://dagwatch.invalid/docs/runbooks.md"
DEFAULT_GRAFANA_URL = "http://localhost:3000"
SEVERITIES = ("critical", "warning", "info")
GROUP = "dagwatch"
#: How far back the event rules look: long enough to survive a missed evaluation.
EVENT_WINDOW = "15m"
FAILURE_RATIO = 0.25
QUEUE_DELAY_SECONDS = 300
RUN_NOT_STARTED_SECONDS = 1800


@dataclass(frozen=True)
class Rule:
    """One alert: its PromQL, how long it must hold, and what the page says."""

    name: str
    expr: str
    wait: str
    severity: str
    summary: str
    description: str
    dashboard: str
    #: Grafana variables the dashboard link sets from the alert's labels
    link_labels: Sequence[str] = ()


def _up() -> str:
    return f'up{{job="{SCRAPE_JOB}"}}'


def _failure_ratio() -> str:
    failed = increase(
        "ti.finish", 'state=~"failed|up_for_retry"', window=EVENT_WINDOW, labels=("dag_id",)
    )
    finished = increase(
        "ti.finish",
        'state=~"success|failed|up_for_retry"',
        window=EVENT_WINDOW,
        labels=("dag_id",),
    )
    return f"({failed}) / ({finished}) > {FAILURE_RATIO}"


def _waiting() -> str:
    return gauge("task_instances", 'state=~"scheduled|queued"')


def _zombies() -> str:
    return increase("task_instances_without_heartbeats_killed", window="1h", labels=("dag_id",))


def rules() -> list[Rule]:
    """Every rule, in the order of docs/runbooks.md."""
    health = series("health.check")
    return [
        Rule(
            "DagwatchSchedulerDown",
            f"{_up()} == 0 or absent({_up()})",
            "1m",
            "critical",
            "dagwatch scheduler {{ $labels.instance }} cannot be scraped",
            "Prometheus has not scraped the scheduler's /metrics for a minute: the "
            "process is down, or its metrics port is unreachable. Nothing is scheduled "
            "while no scheduler runs.",
            "dagwatch-scheduler",
        ),
        Rule(
            "DagwatchSchedulerHeartbeatStale",
            f'{health}{{check="scheduler"}} == 0'
            f" or increase({series('scheduler_heartbeat')}[2m]) == 0",
            "1m",
            "critical",
            "dagwatch scheduler {{ $labels.instance }} stopped heartbeating",
            "The scheduler serves /metrics but its loop does not heartbeat (its job "
            "heartbeat is older than scheduler.heartbeat_timeout, or no loop ran for "
            "2 minutes): tasks are not being scheduled.",
            "dagwatch-scheduler",
        ),
        Rule(
            "DagwatchDagProcessorStale",
            f'{health}{{check="dag_processor"}} == 0',
            "5m",
            "warning",
            "DAG file changes are not being imported",
            "A DAG file changed on disk longer ago than the processor's grace and the "
            "metastore still has the old version: the DAG processor is stuck or stopped.",
            "dagwatch-scheduler",
        ),
        Rule(
            "DagwatchImportErrors",
            f"{gauge('import_errors', labels=('file',), how='max')} > 0",
            "5m",
            "warning",
            "DAG file {{ $labels.file }} fails to import",
            "{{ $labels.file }} raises on import: its DAGs keep their last good version "
            "and new changes to them are not picked up.",
            "dagwatch-scheduler",
        ),
        Rule(
            "DagwatchTaskFailureRatioHigh",
            _failure_ratio(),
            "5m",
            "warning",
            "DAG {{ $labels.dag_id }}: {{ $value | humanizePercentage }} of task attempts fail",
            f"More than {FAILURE_RATIO:.0%} of the task attempts of {{{{ $labels.dag_id }}}} "
            f"finished failed or up_for_retry over the last {EVENT_WINDOW}.",
            "dagwatch-dags",
            ("dag_id",),
        ),
        Rule(
            "DagwatchSlaMissed",
            f"{increase('sla_missed', window=EVENT_WINDOW, labels=('dag_id', 'task_id'))} > 0"
            f" or {increase('deadline.missed', window=EVENT_WINDOW, labels=('dag_id',))} > 0",
            "0m",
            "warning",
            "DAG {{ $labels.dag_id }} missed an SLA or deadline",
            "{{ $labels.dag_id }} {{ $labels.task_id }} missed its SLA or its run deadline "
            f"in the last {EVENT_WINDOW}: the data it produces is late.",
            "dagwatch-slas",
            ("dag_id",),
        ),
        Rule(
            "DagwatchDeadlineAtRisk",
            f"{gauge('deadline.at_risk', labels=('dag_id',), how='max')} > 0",
            "2m",
            "warning",
            "DAG {{ $labels.dag_id }} is forecast to miss its deadline",
            "{{ $value }} running run(s) of {{ $labels.dag_id }} are forecast, from past "
            "durations, to finish after their deadline.",
            "dagwatch-slas",
            ("dag_id",),
        ),
        Rule(
            "DagwatchRunNotStarted",
            f"{gauge('dagrun.queued_age', labels=('dag_id',), how='max')}"
            f" > {RUN_NOT_STARTED_SECONDS}",
            "5m",
            "warning",
            "A run of DAG {{ $labels.dag_id }} has not started",
            "The oldest queued run of {{ $labels.dag_id }} has waited "
            "{{ $value | humanizeDuration }} to start.",
            "dagwatch-dags",
            ("dag_id",),
        ),
        Rule(
            "DagwatchPoolStarving",
            f"{gauge('pool.starving_tasks', labels=('pool',), how='max')} > 0",
            "15m",
            "warning",
            "Pool {{ $labels.pool }} has starved tasks for 15 minutes",
            "{{ $value }} task instance(s) have waited 15 minutes or more for an open "
            "slot of pool {{ $labels.pool }}.",
            "dagwatch-pools",
            ("pool",),
        ),
        Rule(
            "DagwatchExecutorSaturated",
            f"({gauge('executor.open_slots')} <= 0) and on () ({_waiting()} > 0)",
            "15m",
            "warning",
            "The executor has had no open slot for 15 minutes",
            "Every executor slot (core.parallelism) is taken while task instances wait: "
            "work queues up behind the executor.",
            "dagwatch-pools",
        ),
        Rule(
            "DagwatchQueueDelayHigh",
            f"{quantile(0.95, 'task.queued_duration', labels=('pool',), window=EVENT_WINDOW)}"
            f" > {QUEUE_DELAY_SECONDS}",
            "15m",
            "warning",
            "Tasks of pool {{ $labels.pool }} wait long in the queue",
            "95% of the task instances of pool {{ $labels.pool }} waited up to "
            "{{ $value | humanizeDuration }} queued before running over the last "
            f"{EVENT_WINDOW}.",
            "dagwatch-pools",
            ("pool",),
        ),
        Rule(
            "DagwatchAlertDeliveriesFailing",
            f"{increase('alert.failed', window=EVENT_WINDOW, labels=('channel',))} > 0",
            "0m",
            "critical",
            "Notifications to {{ $labels.channel }} are failing",
            "{{ $value }} notification(s) to {{ $labels.channel }} were not delivered after "
            f"alerts.max_attempts tries in the last {EVENT_WINDOW}: pages are late and still "
            "retried until alerts.max_age.",
            "dagwatch-slas",
        ),
        Rule(
            "DagwatchZombieTasks",
            f"{_zombies()} > 0",
            "0m",
            "info",
            "Attempts of DAG {{ $labels.dag_id }} lost their heartbeat",
            "{{ $value }} attempt(s) of {{ $labels.dag_id }} were failed as zombies in the "
            "last hour (their process died or stopped heartbeating).",
            "dagwatch-scheduler",
        ),
    ]


def _annotations(rule: Rule, runbook_base: str, grafana_url: str) -> dict[str, str]:
    link = f"{grafana_url.rstrip('/')}/d/{rule.dashboard}"
    params = "&".join(f"var-{label}={{{{ $labels.{label} }}}}" for label in rule.link_labels)
    return {
        "summary": rule.summary,
        "description": rule.description,
        "runbook_url": f"{runbook_base}#{rule.name.lower()}",
        "dashboard_url": f"{link}?{params}" if params else link,
    }


def render(
    rule_list: Sequence[Rule] | None = None,
    runbook_base: str = DEFAULT_RUNBOOK_BASE,
    grafana_url: str = DEFAULT_GRAFANA_URL,
) -> str:
    """The rule file's text (YAML; strings written as JSON, which YAML reads as is)."""
    lines = [
        "# Generated from metrics/catalog.py by `python -m metrics.mixin`: do not edit.",
        "# Tests: dashboards/prometheus/alerts_test.yml (`promtool test rules`).",
        "groups:",
        f"  - name: {GROUP}",
        "    rules:",
    ]
    for rule in rules() if rule_list is None else rule_list:
        lines += [
            f"      - alert: {rule.name}",
            f"        expr: {json.dumps(rule.expr)}",
            f"        for: {rule.wait}",
            "        labels:",
            f"          severity: {rule.severity}",
            "        annotations:",
        ]
        for key, value in _annotations(rule, runbook_base, grafana_url).items():
            lines.append(f"          {key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"
