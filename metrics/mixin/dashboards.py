"""The four dashboards: scheduler and executor, DAGs and tasks, pools, SLAs and alerts.

Each panel's description says what to check and what to do when it looks wrong; the
longer answers are in docs/runbooks.md, one section per alert.
"""

from __future__ import annotations

from metrics.mixin.grafana import Dashboard, Panel, Row, Variable, q
from metrics.mixin.promql import RANGE, gauge, increase, mean, quantile, rate, series

#: The job name of the shipped scrape config (dashboards/prometheus/prometheus.yml).
SCRAPE_JOB = "dagwatch"
_DT = ("dag_id", "task_id")
_FAILED = 'state=~"failed|up_for_retry"'
_FINISHED = 'state=~"success|failed|up_for_retry"'

DAG_VARIABLES = (
    Variable("dag_id", "DAG", f"label_values({series('ti.start')}, dag_id)"),
    Variable(
        "task_id", "Task", f'label_values({series("ti.start")}{{dag_id=~"$dag_id"}}, task_id)'
    ),
)
POOL_VARIABLE = Variable("pool", "Pool", f"label_values({series('pool.open_slots')}, pool)")


def _p50_p95(name: str, labels: tuple[str, ...], legend: str, filters=()) -> list:
    return [
        q(quantile(0.5, name, labels=labels, filters=filters), f"{legend} p50"),
        q(quantile(0.95, name, labels=labels, filters=filters), f"{legend} p95"),
    ]


def scheduler() -> Dashboard:
    """Is the scheduler alive, is its loop fast, is parsing healthy, is work being lost."""
    liveness = Row(
        "Liveness",
        [
            Panel(
                "Scrape target up",
                "1 when Prometheus can scrape the scheduler's /metrics. 0: the scheduler "
                "process is down or unreachable; check `dagwatch scheduler` and its log, "
                "then metrics.prometheus_host/port (runbook DagwatchSchedulerDown).",
                [q(f'up{{job="{SCRAPE_JOB}"}}', "{{instance}}")],
                "none",
                kind="stat",
                width=6,
                height=5,
                thresholds=((0.5, "green"),),
            ),
            Panel(
                "Heartbeat age",
                "Seconds since the scheduler job last heartbeated in the metastore. Above "
                "scheduler.heartbeat_timeout the loop is stuck or the metastore is slow: "
                "check /health and the scheduler log (runbook DagwatchSchedulerHeartbeatStale).",
                [q(gauge("scheduler.heartbeat_age", how="max"), "heartbeat age")],
                "s",
                kind="stat",
                width=6,
                height=5,
                thresholds=((30, "orange"), (60, "red")),
            ),
            Panel(
                "Health checks",
                "Each /health check: 1 passes, 0 fails. A failing check names its reason "
                "in `curl <scheduler>/health`; fix that first.",
                [q(gauge("health.check", labels=("check",), how="min"), "{{check}}")],
                "none",
                kind="stat",
                width=6,
                height=5,
                thresholds=((0.5, "green"),),
            ),
            Panel(
                "Version",
                "The dagwatch version each scraped process runs. Two versions at once "
                "mean a rolling upgrade, or a scheduler left behind.",
                [q(gauge("build_info", labels=("version",), how="max"), "{{version}}")],
                "none",
                kind="stat",
                width=6,
                height=5,
            ),
        ],
    )
    loop = Row(
        "Scheduler loop",
        [
            Panel(
                "Loop duration p50 / p95",
                "Seconds per scheduler loop iteration. A p95 growing towards "
                "scheduler.loop_interval or beyond delays every task: look for slow "
                "metastore queries or too many active runs.",
                _p50_p95("scheduler.scheduler_loop_duration", (), "loop"),
                "s",
            ),
            Panel(
                "Heartbeats per second",
                "Scheduler loop iterations per second. Flat at 0 while the process is up "
                "means the loop is stuck: take a stack dump (py-spy) and restart.",
                [q(rate("scheduler_heartbeat"), "heartbeats/s")],
                "ops",
            ),
            Panel(
                "Tasks executable / starving",
                "Task instances the last loop queued, and those it could not queue for "
                "lack of a pool slot. Starving for long: see the Pools dashboard.",
                [
                    q(gauge("scheduler.tasks.executable", how="max"), "executable"),
                    q(gauge("scheduler.tasks.starving", how="max"), "starving"),
                ],
                "short",
            ),
            Panel(
                "DAG runs running",
                "Runs in the running state. Growing without bound: runs do not finish "
                "(stuck tasks, sensors); check the DAGs dashboard.",
                [q(gauge("scheduler.dagruns.running", how="max"), "running runs")],
                "short",
            ),
        ],
    )
    executor = Row(
        "Executor",
        [
            Panel(
                "Executor slots",
                "Open slots, queued and running attempts. Open at 0 with attempts queued: "
                "the executor is saturated; raise core.parallelism or add workers "
                "(runbook DagwatchExecutorSaturated).",
                [
                    q(gauge("executor.open_slots"), "open"),
                    q(gauge("executor.queued_tasks"), "queued"),
                    q(gauge("executor.running_tasks"), "running"),
                ],
                "short",
            ),
            Panel(
                "Task instances of active runs, by state",
                "Task instances of queued and running DAG runs. Many `scheduled` and few "
                "`running`: capacity is short; many `up_for_retry`: something fails.",
                [q(gauge("task_instances", labels=("state",), how="max"), "{{state}}")],
                "short",
                stacked=True,
            ),
        ],
    )
    parsing = Row(
        "DAG parsing",
        [
            Panel(
                "Import errors",
                "DAG files that failed to import. Above 0: `dagwatch dags "
                "list-import-errors` shows why; fix the file (runbook DagwatchImportErrors).",
                [q(gauge("dag_processing.import_errors", how="max"), "import errors")],
                "short",
                kind="stat",
                width=4,
                thresholds=((1, "red"),),
            ),
            Panel(
                "Files with import errors",
                "One row per broken DAG file. Its DAGs keep their last good version; "
                "fix the file and the next parse clears it.",
                [q(gauge("import_errors", labels=("file",), how="max"), "{{file}}")],
                "short",
                kind="table",
                width=8,
            ),
            Panel(
                "DAGs found",
                "DAGs found by the last scan. A sudden drop: a file stopped importing or "
                "was removed; check import errors.",
                [q(gauge("dagbag_size", how="max"), "DAGs")],
                "short",
                width=6,
            ),
            Panel(
                "Total parse time",
                "Seconds to scan and import all DAG files once. Close to "
                "scheduler.min_file_process_interval: parsing falls behind; move slow "
                "top-level code out of DAG files.",
                [q(gauge("dag_processing.total_parse_time", how="max"), "total")],
                "s",
                width=6,
            ),
            Panel(
                "Import time per file (mean)",
                "Mean seconds to import each DAG file since the scheduler started. A slow "
                "file does work at import time (network, database): move it into tasks.",
                [q(mean("dag_processing.last_duration", labels=("file",)), "{{file}}")],
                "s",
                kind="bargauge",
            ),
            Panel(
                "Seconds since each file was parsed",
                "Unchanged files are not re-imported, so this grows for them; a file you "
                "just edited that stays old means the DAG processor is stuck "
                "(runbook DagwatchDagProcessorStale).",
                [
                    q(
                        gauge("dag_processing.last_run.seconds_ago", labels=("file",), how="max"),
                        "{{file}}",
                    )
                ],
                "s",
            ),
        ],
    )
    lost = Row(
        "Lost work",
        [
            Panel(
                "Zombies killed",
                "Attempts failed because their heartbeat stopped (worker killed, OOM, "
                "machine lost). Any: check the worker hosts' memory and the task's log.",
                [
                    q(
                        increase("task_instances_without_heartbeats_killed", labels=_DT),
                        "{{dag_id}}.{{task_id}}",
                    )
                ],
                "short",
                width=8,
            ),
            Panel(
                "Orphaned attempts reset / adopted",
                "Attempts a scheduler found without a live executor (after a restart) and "
                "reset or adopted. A burst after each restart is normal; a steady stream "
                "means executors die.",
                [
                    q(increase("scheduler.orphaned_tasks.cleared"), "reset"),
                    q(increase("scheduler.orphaned_tasks.adopted"), "adopted"),
                ],
                "short",
                width=8,
            ),
            Panel(
                "DAG file imports timed out",
                "Imports killed for exceeding dag_file_processor_timeout. Fix the file's "
                "top-level code or raise the timeout.",
                [q(increase("dag_processing.processor_timeouts", labels=("file",)), "{{file}}")],
                "short",
                width=8,
            ),
        ],
    )
    return Dashboard(
        "dagwatch-scheduler",
        "dagwatch / Scheduler & executor",
        "Is the scheduler alive and fast, is parsing healthy, is work being lost.",
        [liveness, loop, executor, parsing, lost],
    )


def dags() -> Dashboard:
    """What fails, what is slow, what is late, per DAG and task."""
    f = _DT
    outcomes = Row(
        "Outcomes",
        [
            Panel(
                "Task attempts finished, by state",
                "Attempts that ended in each state per rate window. A rise of failed or "
                "up_for_retry: open the failing task's log in the console.",
                [q(increase("ti.finish", labels=("state",), filters=f), "{{state}}")],
                "short",
                stacked=True,
            ),
            Panel(
                "Failure ratio per DAG",
                "Failed attempts (retries included) over finished attempts, over the rate "
                "window. Above the alert's 25%: see runbook DagwatchTaskFailureRatioHigh.",
                [
                    q(
                        f"{increase('ti.finish', _FAILED, labels=('dag_id',), filters=f)}"
                        f" / {increase('ti.finish', _FINISHED, labels=('dag_id',), filters=f)}",
                        "{{dag_id}}",
                    )
                ],
                "percentunit",
            ),
            Panel(
                "Failed attempts per task",
                "Failed attempts (retries included) per task. A task failing at every run "
                "is broken, not flaky: fix it or pause the DAG.",
                [q(increase("ti_failures", labels=_DT, filters=f), "{{dag_id}}.{{task_id}}")],
                "short",
            ),
            Panel(
                "Retries and timeouts per task",
                "Attempts that will be retried, and attempts killed by execution_timeout. "
                "Many timeouts: the task got slower or its timeout is too tight.",
                [
                    q(increase("ti.retries", labels=_DT, filters=f), "retry {{task_id}}"),
                    q(increase("ti.timeouts", labels=_DT, filters=f), "timeout {{task_id}}"),
                ],
                "short",
            ),
            Panel(
                "Attempts started",
                "Attempts started per task. Nothing started while runs are due: check "
                "the scheduler dashboard and pools.",
                [q(increase("ti.start", labels=_DT, filters=f), "{{dag_id}}.{{task_id}}")],
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
    durations = Row(
        "Durations",
        [
            Panel(
                "Run duration p50 / p95 (successful runs)",
                "Seconds a successful run took, per DAG. A DAG getting slower eats its "
                "SLA slack: compare with the SLAs dashboard.",
                _p50_p95("dagrun.duration.success", ("dag_id",), "{{dag_id}}", ("dag_id",)),
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
                _p50_p95("task.duration", _DT, "{{dag_id}}.{{task_id}}", _DT),
                "s",
                width=24,
            ),
        ],
    )
    delays = Row(
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
                _p50_p95("task.queued_duration", _DT, "{{dag_id}}.{{task_id}}", _DT),
                "s",
                width=8,
            ),
            Panel(
                "Scheduled to queued p95",
                "Seconds a task instance waited scheduled before being queued: time spent "
                "on concurrency limits (max_active_tasks, pools, parallelism).",
                [
                    q(
                        quantile(0.95, "task.scheduled_duration", labels=_DT, filters=_DT),
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
    flight = Row(
        "In flight",
        [
            Panel(
                "Task instances by state, per task",
                "Scheduled, queued, running and rescheduled sensors now. Queued that never "
                "runs: the executor or its workers are down.",
                [
                    q(gauge("ti.scheduled", labels=_DT, filters=f), "scheduled {{task_id}}"),
                    q(gauge("ti.queued", labels=_DT, filters=f), "queued {{task_id}}"),
                    q(gauge("ti.running", labels=_DT, filters=f), "running {{task_id}}"),
                    q(
                        gauge("ti.up_for_reschedule", labels=_DT, filters=f),
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
    return Dashboard(
        "dagwatch-dags",
        "dagwatch / DAGs & tasks",
        "Success and failure, durations and delays per DAG and task.",
        [outcomes, durations, delays, flight],
        DAG_VARIABLES,
    )


def pools() -> Dashboard:
    """Where capacity is short: slots per pool, starving tasks, saturation, queue delay."""
    f = ("pool",)
    held = (
        f"{gauge('pool.running_slots', labels=f, filters=f)}"
        f" + {gauge('pool.queued_slots', labels=f, filters=f)}"
    )
    slots = Row(
        "Pools",
        [
            Panel(
                "Slots by state",
                "Open, queued, running and wanted (scheduled) slots per pool. Open at 0 "
                "with scheduled slots waiting: the pool is the bottleneck.",
                [
                    q(gauge("pool.open_slots", labels=f, filters=f), "{{pool}} open"),
                    q(gauge("pool.queued_slots", labels=f, filters=f), "{{pool}} queued"),
                    q(gauge("pool.running_slots", labels=f, filters=f), "{{pool}} running"),
                    q(gauge("pool.scheduled_slots", labels=f, filters=f), "{{pool}} scheduled"),
                ],
                "short",
                width=24,
            ),
            Panel(
                "Saturation",
                "Slots held (queued + running) over the pool's size. Near 100% for long "
                "with starving tasks: raise the pool (`dagwatch pools set`) or spread work.",
                [
                    q(
                        f"({held}) / ({held}"
                        f" + clamp_min({gauge('pool.open_slots', labels=f, filters=f)}, 0))",
                        "{{pool}}",
                    )
                ],
                "percentunit",
                width=8,
            ),
            Panel(
                "Starving tasks",
                "Task instances waiting for an open slot of the pool. Above 0 for minutes: "
                "runbook DagwatchPoolStarving.",
                [q(gauge("pool.starving_tasks", labels=f, filters=f, how="max"), "{{pool}}")],
                "short",
                width=8,
            ),
            Panel(
                "Queue delay p95 per pool",
                "Seconds task instances of the pool waited queued before running. High: "
                "runbook DagwatchQueueDelayHigh.",
                [q(quantile(0.95, "task.queued_duration", labels=f, filters=f), "{{pool}}")],
                "s",
                width=8,
            ),
        ],
    )
    capacity = Row(
        "Executor and queues",
        [
            Panel(
                "Executor capacity",
                "Open slots against running and queued attempts across executors. Open "
                "at 0 while pools have room: core.parallelism is the limit.",
                [
                    q(gauge("executor.open_slots"), "open"),
                    q(gauge("executor.running_tasks"), "running"),
                    q(gauge("executor.queued_tasks"), "queued"),
                ],
                "short",
            ),
            Panel(
                "Queued task instances per queue",
                "Task instances queued per executor queue. One queue growing: its "
                "workers are missing: start a `dagwatch worker` for it.",
                [q(gauge("ti.queued", labels=("queue",)), "{{queue}}")],
                "short",
            ),
        ],
    )
    return Dashboard(
        "dagwatch-pools",
        "dagwatch / Pools & capacity",
        "Slots per pool by state, starving tasks, saturation and queue delay.",
        [slots, capacity],
        (POOL_VARIABLE,),
    )


def slas() -> Dashboard:
    """Misses, runs at risk, slack, and whether alerts reach people."""
    d = ("dag_id",)
    misses = Row(
        "SLAs and deadlines",
        [
            Panel(
                "SLA misses in range",
                "Task SLA misses raised over the dashboard's time range. Any: see runbook "
                "DagwatchSlaMissed.",
                [q(increase("sla_missed", window=RANGE, filters=_DT), "SLA misses")],
                "short",
                kind="stat",
                width=6,
                thresholds=((1, "red"),),
            ),
            Panel(
                "Deadline misses in range",
                "DAG run deadlines missed over the dashboard's time range.",
                [q(increase("deadline.missed", window=RANGE, filters=d), "deadline misses")],
                "short",
                kind="stat",
                width=6,
                thresholds=((1, "red"),),
            ),
            Panel(
                "Runs at risk",
                "Running runs forecast to miss their deadline now. Act before the miss: "
                "runbook DagwatchDeadlineAtRisk.",
                [q(gauge("deadline.at_risk", labels=d, filters=d, how="max"), "{{dag_id}}")],
                "short",
                kind="stat",
                width=12,
                thresholds=((1, "orange"),),
            ),
            Panel(
                "SLA misses per task",
                "SLA misses per task over the rate window. The same task every day: "
                "its SLA is wrong or it needs to start earlier.",
                [q(increase("sla_missed", labels=_DT, filters=_DT), "{{dag_id}}.{{task_id}}")],
                "short",
            ),
            Panel(
                "Predicted slack",
                "Seconds left before the nearest deadline of each DAG's runs (negative "
                "once missed). Falling towards 0: the run will be late.",
                [q(gauge("deadline.slack_seconds", labels=d, filters=d, how="min"), "{{dag_id}}")],
                "s",
            ),
        ],
    )
    delivery = Row(
        "Alert delivery",
        [
            Panel(
                "Deliveries by channel",
                "Notifications delivered, failed for good and suppressed, per channel. "
                "Any failed: pages are being lost (runbook DagwatchAlertDeliveriesFailing).",
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
                _p50_p95("alert.delivery_latency", ("channel",), "{{channel}}"),
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
    return Dashboard(
        "dagwatch-slas",
        "dagwatch / SLAs & alerts",
        "SLA and deadline misses, runs at risk, predicted slack, alert delivery.",
        [misses, delivery],
        DAG_VARIABLES,
    )


DASHBOARDS = {
    "scheduler": scheduler,
    "dags": dags,
    "pools": pools,
    "slas": slas,
}
