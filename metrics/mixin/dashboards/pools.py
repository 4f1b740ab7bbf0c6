"""Pools & capacity: slots per pool by state, starving tasks, saturation, queue delay."""

from __future__ import annotations

from metrics.mixin.dashboards.common import POOL, POOL_VARIABLE
from metrics.mixin.grafana import Dashboard, Panel, Row, q
from metrics.mixin.promql import gauge, quantile


def _held() -> str:
    """Slots of each pool held by queued and running task instances."""
    return (
        f"{gauge('pool.running_slots', labels=POOL, filters=POOL)}"
        f" + {gauge('pool.queued_slots', labels=POOL, filters=POOL)}"
    )


def _slots() -> Row:
    return Row(
        "Pools",
        [
            Panel(
                "Slots by state",
                "Open, queued, running and wanted (scheduled) slots per pool. Open at 0 "
                "with scheduled slots waiting: the pool is the bottleneck.",
                [
                    q(gauge("pool.open_slots", labels=POOL, filters=POOL), "{{pool}} open"),
                    q(gauge("pool.queued_slots", labels=POOL, filters=POOL), "{{pool}} queued"),
                    q(gauge("pool.running_slots", labels=POOL, filters=POOL), "{{pool}} running"),
                    q(
                        gauge("pool.scheduled_slots", labels=POOL, filters=POOL),
                        "{{pool}} scheduled",
                    ),
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
                        f"({_held()}) / ({_held()}"
                        f" + clamp_min({gauge('pool.open_slots', labels=POOL, filters=POOL)}, 0))",
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
                [q(gauge("pool.starving_tasks", labels=POOL, filters=POOL, how="max"), "{{pool}}")],
                "short",
                width=8,
            ),
            Panel(
                "Queue delay p95 per pool",
                "Seconds task instances of the pool waited queued before running. High: "
                "runbook DagwatchQueueDelayHigh.",
                [q(quantile(0.95, "task.queued_duration", labels=POOL, filters=POOL), "{{pool}}")],
                "s",
                width=8,
            ),
        ],
    )


def _capacity() -> Row:
    return Row(
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
            Panel(
                "Celery worker slots per queue",
                "Running and free slots of live `dagwatch worker` processes (celery "
                "executor), per queue; a worker's free slots count under each queue it "
                "consumes. Free at 0 with a growing queue: add workers for that queue.",
                [
                    q(
                        gauge("executor.worker.running_slots", labels=("queue",)),
                        "running {{queue}}",
                    ),
                    q(gauge("executor.worker.open_slots", labels=("queue",)), "free {{queue}}"),
                    q(gauge("executor.workers"), "live workers"),
                ],
                "short",
            ),
        ],
    )


def dashboard() -> Dashboard:
    """Where capacity is short: slots per pool, starving tasks, saturation, queue delay."""
    return Dashboard(
        "dagwatch-pools",
        "dagwatch / Pools & capacity",
        "Slots per pool by state, starving tasks, saturation and queue delay.",
        [_slots(), _capacity()],
        (POOL_VARIABLE,),
    )
