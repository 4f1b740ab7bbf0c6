"""Scheduler & executor: is the scheduler alive and fast, is parsing healthy, is work lost."""

from __future__ import annotations

from metrics.mixin.dashboards.common import DT, SCRAPE_JOB, p50_p95
from metrics.mixin.grafana import Dashboard, Panel, Row, q
from metrics.mixin.promql import gauge, increase, mean, rate


def _liveness() -> Row:
    return Row(
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


def _loop() -> Row:
    return Row(
        "Scheduler loop",
        [
            Panel(
                "Loop duration p50 / p95",
                "Seconds per scheduler loop iteration. A p95 growing towards "
                "scheduler.loop_interval or beyond delays every task: look for slow "
                "metastore queries or too many active runs.",
                p50_p95("scheduler.scheduler_loop_duration", (), "loop"),
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


def _executor() -> Row:
    return Row(
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


def _parsing() -> Row:
    return Row(
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


def _lost() -> Row:
    return Row(
        "Lost work",
        [
            Panel(
                "Zombies killed",
                "Attempts failed because their heartbeat stopped (worker killed, OOM, "
                "machine lost). Any: check the worker hosts' memory and the task's log.",
                [
                    q(
                        increase("task_instances_without_heartbeats_killed", labels=DT),
                        "{{dag_id}}.{{task_id}}",
                    )
                ],
                "short",
                width=8,
            ),
            Panel(
                "Orphaned attempts reset / adopted, schedulers lost",
                "Attempts a scheduler found without a live executor (after a restart) and "
                "reset, or took over from a scheduler that stopped heartbeating (lost). A "
                "burst after each restart is normal; a steady stream means executors or "
                "schedulers die.",
                [
                    q(increase("scheduler.orphaned_tasks.cleared"), "reset"),
                    q(increase("scheduler.orphaned_tasks.adopted"), "adopted"),
                    q(increase("scheduler.schedulers_lost"), "schedulers lost"),
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


def dashboard() -> Dashboard:
    """Is the scheduler alive, is its loop fast, is parsing healthy, is work being lost."""
    return Dashboard(
        "dagwatch-scheduler",
        "dagwatch / Scheduler & executor",
        "Is the scheduler alive and fast, is parsing healthy, is work being lost.",
        [_liveness(), _loop(), _executor(), _parsing(), _lost()],
    )
