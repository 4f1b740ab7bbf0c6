"""DAGs & tasks: what fails, what is slow, what is late, per DAG and task."""

from __future__ import annotations

from metrics.mixin.dashboards.common import DAG_VARIABLES, DT, p50_p95
from metrics.mixin.grafana import Dashboard, Panel, Row, q
from metrics.mixin.promql import gauge, increase, quantile

_FAILED = 'state=~"failed|up_for_retry"'
_FINISHED = 'state=~"success|failed|up_for_retry"'


def _outcomes() -> Row:
    return Row(
        "Outcomes",
        [
            Panel(
                "Task attempts finished, by state",
                "Attempts that ended in each state per rate window. A rise of failed or "
                "up_for_retry: open the failing task's log in the console.",
                [q(increase("ti.finish", labels=("state",), filters=DT), "{{state}}")],
                "short",
                stacked=True,
            ),
            Panel(
                "Failure ratio per DAG",
                "Failed attempts (retries included) over finished attempts, over the rate "
                "window. Above the alert's 25%: see runbook DagwatchTaskFailureRatioHigh.",
                [
                    q(
                        f"{increase('ti.finish', _FAILED, labels=('dag_id',), filters=DT)}"
                        f" / {increase('ti.finish', _FINISHED, labels=('dag_id',), filters=DT)}",
                        "{{dag_id}}",
                    )
                ],
                "percentunit",
            ),
            Panel(
                "Failed attempts per task",
                "Failed attempts (retries included) per task. A task failing at every run "
                "is broken, not flaky: fix it or pause the DAG.",
                [q(increase("ti_failures", labels=DT, filters=DT), "{{dag_id}}.{{task_id}}")],
                "short",
            ),
            Panel(
                "Retries and timeouts per task",
                "Attempts that will be retried, and attempts killed by execution_timeout. "
                "Many timeouts: the task got slower or its timeout is too tight.",
                [
                    q(increase("ti.retries", labels=DT, filters=DT), "retry {{task_id}}"),
                    q(increase("ti.timeouts", labels=DT, filters=DT), "timeout {{task_id}}"),
                ],
                "short",
            ),
            Panel(
                "Attempts started",
                "Attempts started per task. Nothing started while runs are due: check "
                "the scheduler dashboard and pools.",
                [q(increase("ti.start", labels=DT, filters=DT), "{{dag_id}}.{{task_id}}")],
                "short",
            ),
            Panel(
                "Outcomes by operator",
                "Failed and successful attempts by operator class: a failing operator "
                "across many DAGs points to a shared dependency (a hook, a connection).",
                [
                    q(increase("operator_failures", labels=("operator",)), "{{operator}} failed"),
                    q(increase("operator_successes", labels=("operator",)), "{{operator}} ok"),
                ],
                "short",
            ),
        ],
    )


def _durations() -> Row:
    return Row(
        "Durations",
        [
            Panel(
                "Run duration p50 / p95 (successful runs)",
                "Seconds a successful run took, per DAG. A DAG getting slower eats its "
                "SLA slack: compare with the SLAs dashboard.",
                p50_p95("dagrun.duration.success", ("dag_id",), "{{dag_id}}", ("dag_id",)),
                "s",
            ),
            Panel(
                "Run duration p95 (failed runs)",
                "Seconds until a run failed, per DAG. Failing fast: a broken input; "
                "failing late: a timeout.",
                [
                    q(
                        quantile(
                            0.95, "dagrun.duration.failed", labels=("dag_id",), filters=("dag_id",)
                        ),
                        "{{dag_id}} p95",
                    )
                ],
                "s",
            ),
            Panel(
                "Task duration p50 / p95",
                "Seconds an attempt ran, per task. A jump after a deploy or as data grows: "
                "check the task's log and its inputs.",
                p50_p95("task.duration", DT, "{{dag_id}}.{{task_id}}", DT),
                "s",
                width=24,
            ),
        ],
    )


def _delays() -> Row:
    return Row(
        "Delays",
        [
            Panel(
                "Schedule delay p95",
                "Seconds from the end of a run's data interval to its start, per DAG. "
                "High: the scheduler is behind or max_active_runs holds the run "
                "(runbook DagwatchRunNotStarted).",
                [
                    q(
                        quantile(
                            0.95, "dagrun.schedule_delay", labels=("dag_id",), filters=("dag_id",)
                        ),
                        "{{dag_id}}",
                    )
                ],
                "s",
                width=8,
            ),
            Panel(
                "Queue delay p50 / p95",
                "Seconds a task instance waited queued before running, per task. High: "
                "executor or pool capacity is short (runbook DagwatchQueueDelayHigh).",
                p50_p95("task.queued_duration", DT, "{{dag_id}}.{{task_id}}", DT),
                "s",
                width=8,
            ),
            Panel(
                "Scheduled to queued p95",
                "Seconds a task instance waited scheduled before being queued: time spent "
                "on concurrency limits (max_active_tasks, pools, parallelism).",
                [
                    q(
                        quantile(0.95, "task.scheduled_duration", labels=DT, filters=DT),
                        "{{dag_id}}.{{task_id}}",
                    )
                ],
                "s",
                width=8,
            ),
            Panel(
                "Oldest queued run",
                "Seconds the oldest run of each DAG has waited to start. Growing: the "
                "run is held by max_active_runs or a paused DAG (runbook "
                "DagwatchRunNotStarted).",
                [
                    q(
                        gauge(
                            "dagrun.queued_age", labels=("dag_id",), filters=("dag_id",), how="max"
                        ),
                        "{{dag_id}}",
                    )
                ],
                "s",
                width=8,
            ),
            Panel(
                "First task scheduling delay p95",
                "Seconds from a scheduled run's expected start to its first task's start.",
                [
                    q(
                        quantile(
                            0.95,
                            "dagrun.first_task_scheduling_delay",
                            labels=("dag_id",),
                            filters=("dag_id",),
                        ),
                        "{{dag_id}}",
                    )
                ],
                "s",
                width=8,
            ),
            Panel(
                "Dependency check p95",
                "Seconds the scheduler spends deciding a run's task instances. High for "
                "one DAG: it has very many tasks or mapped instances.",
                [
                    q(
                        quantile(
                            0.95, "dagrun.dependency-check", labels=("dag_id",), filters=("dag_id",)
                        ),
                        "{{dag_id}}",
                    )
                ],
                "s",
                width=8,
            ),
        ],
    )


def _flight() -> Row:
    return Row(
        "In flight",
        [
            Panel(
                "Task instances by state, per task",
                "Scheduled, queued, running and rescheduled sensors now. Queued that never "
                "runs: the executor or its workers are down.",
                [
                    q(gauge("ti.scheduled", labels=DT, filters=DT), "scheduled {{task_id}}"),
                    q(gauge("ti.queued", labels=DT, filters=DT), "queued {{task_id}}"),
                    q(gauge("ti.running", labels=DT, filters=DT), "running {{task_id}}"),
                    q(
                        gauge("ti.up_for_reschedule", labels=DT, filters=DT),
                        "reschedule {{task_id}}",
                    ),
                ],
                "short",
            ),
            Panel(
                "Callbacks by outcome",
                "Callbacks run (on_failure_callback...) and their status; DAG callback "
                "exceptions too. Failed callbacks mean someone was not told: check the "
                "scheduler log for the traceback.",
                [
                    q(
                        increase(
                            "callback.outcome", labels=("callback", "status"), filters=("dag_id",)
                        ),
                        "{{callback}} {{status}}",
                    ),
                    q(
                        increase(
                            "dag.callback_exceptions", labels=("dag_id",), filters=("dag_id",)
                        ),
                        "exceptions {{dag_id}}",
                    ),
                ],
                "short",
            ),
        ],
    )


def dashboard() -> Dashboard:
    """What fails, what is slow, what is late, per DAG and task."""
    return Dashboard(
        "dagwatch-dags",
        "dagwatch / DAGs & tasks",
        "Success and failure, durations and delays per DAG and task.",
        [_outcomes(), _durations(), _delays(), _flight()],
        DAG_VARIABLES,
    )
