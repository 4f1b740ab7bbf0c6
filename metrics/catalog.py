"""Every metric dagwatch emits, declared once.

The canonical name is Airflow's dotted name (`ti.finish`), so Airflow users find what
they know; `legacy` is the StatsD name template Airflow used with the variables inside
the name (`ti.finish.{dag_id}.{task_id}.{state}`). The Prometheus and OpenTelemetry
names are derived from the canonical one, never typed by hand, so the three backends,
the statsd_exporter mapping and the dashboards cannot drift apart.

Labels come from a closed set: a label whose values grow with every run (run_id, try
number, hostname) would create a series per run and ruin the time-series database.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from metrics.errors import DuplicateMetric

MetricType = Literal["counter", "gauge", "timer"]
#: What a push backend is sent when a gauge's series stops being reported (see `Metric`).
WhenGone = Literal["zero", "drop"]
WHEN_GONE: tuple[WhenGone, ...] = ("zero", "drop")

NAMESPACE = "dagwatch"
CUSTOM_PREFIX = "custom."

#: Labels a catalog metric may carry; bounded by the number of DAGs, tasks, pools...
ALLOWED_LABELS = frozenset(
    {
        "dag_id",
        "task_id",
        "pool",
        "queue",
        "state",
        "executor",
        "operator",
        "file",
        "callback",
        "event",
        "route",
        "channel",
        "kind",
        "status",
        "worker",  # a live Celery worker: bounded by the workers running (`--name` keeps it)
    }
)
#: Labels allowed on one metric only, named explicitly (a version per deployment is fine).
SINGLE_USE_LABELS: Mapping[str, str] = {"version": "build_info", "check": "health.check"}
#: Never labels: one value per run, attempt or machine means one series per run.
FORBIDDEN_LABELS = frozenset(
    {"run_id", "try_number", "try", "attempt", "hostname", "host", "pid", "map_index", "job_id"}
)
UNITS = ("", "seconds", "bytes", "slots")
_OTEL_UNITS = {"": "", "seconds": "s", "bytes": "By", "slots": "{slot}"}
#: Histogram bounds in seconds for every timer, from a fast scheduler loop to a day-long
#: task; shared by Prometheus, OpenTelemetry and the statsd_exporter mapping.
TIMER_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 21600, 86400)
_NAME = re.compile(r"^[a-z][a-z0-9_]*(?:[.-][a-z0-9_]+)*$")


@dataclass(frozen=True)
class Metric:
    """One metric: what it measures, its labels, and every name it goes by.

    `when_gone` (gauges only) says what a series that stops being reported becomes in
    the push backends (`metrics.gauges.GaugeSet`): "zero", sent as 0 once and then
    forgotten, for counts and slots (a task with no running instance has 0 running);
    "drop", forgotten without a last value, for ages and durations, where 0 would be a
    false reading ("parsed just now", "the deadline is now").
    """

    name: str
    type: MetricType
    unit: str
    labels: tuple[str, ...]
    help: str
    legacy: str | None = None
    custom: bool = field(default=False, compare=False)
    when_gone: WhenGone = "zero"

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ValueError(f"metric {self.name!r}: " + "; ".join(problems))

    def _problems(self) -> Iterator[str]:
        if not _NAME.match(self.name):
            yield "name must be lowercase words joined by '.', '-' or '_'"
        if self.name.startswith(CUSTOM_PREFIX) != self.custom:
            yield f"only custom metrics, and all of them, start with {CUSTOM_PREFIX!r}"
        if self.type not in ("counter", "gauge", "timer"):
            yield f"type {self.type!r} is not counter, gauge or timer"
        if self.unit not in UNITS:
            yield f"unit {self.unit!r} is not one of {UNITS}"
        if self.type == "timer" and self.unit != "seconds":
            yield "timers are measured in seconds"
        if not self.help:
            yield "help text is required"
        if self.when_gone not in WHEN_GONE:
            yield f"when_gone {self.when_gone!r} is not one of {WHEN_GONE}"
        elif self.when_gone != "zero" and self.type != "gauge":
            yield "only gauges have a when_gone rule"
        yield from self._label_problems()

    def _label_problems(self) -> Iterator[str]:
        if len(set(self.labels)) != len(self.labels):
            yield "duplicate labels"
        forbidden = FORBIDDEN_LABELS.intersection(self.labels)
        if forbidden:
            yield f"forbidden labels {sorted(forbidden)} (one series per run or machine)"
        if not self.custom:
            for label in self.labels:
                if label not in ALLOWED_LABELS and SINGLE_USE_LABELS.get(label) != self.name:
                    yield f"label {label!r} is not in the allowed set"
        if self.legacy is not None and set(template_fields(self.legacy)) - set(self.labels):
            yield f"legacy name {self.legacy!r} uses a variable that is not a label"

    @classmethod
    def custom_metric(cls, name: str, type: MetricType, labels: tuple[str, ...]) -> Metric:
        """A metric declared at run time by user code through the `custom.` prefix."""
        unit = "seconds" if type == "timer" else ""
        return cls(name, type, unit, labels, _CUSTOM_HELP, None, custom=True)

    @property
    def prometheus_name(self) -> str:
        """Prometheus conventions: namespace, snake case, base unit, `_total` on counters."""
        base = f"{NAMESPACE}_{re.sub(r'[.-]', '_', self.name)}"
        unit = "seconds" if self.type == "timer" else self.unit
        if unit and unit not in base.split("_"):
            base = f"{base}_{unit}"
        if self.type == "counter" and not base.endswith("_total"):
            base = f"{base}_total"
        return base

    @property
    def otel_name(self) -> str:
        """OpenTelemetry keeps dots and puts the unit in the instrument, not the name."""
        return f"{NAMESPACE}.{self.name}"

    @property
    def otel_unit(self) -> str:
        return _OTEL_UNITS["seconds" if self.type == "timer" else self.unit]

    @property
    def statsd_template(self) -> str:
        """The plain-StatsD name: Airflow's legacy template, or the name then each label."""
        if self.legacy is not None:
            return self.legacy
        return self.name + "".join(f".{{{label}}}" for label in self.labels)


class Sample(NamedTuple):
    """One value of a catalog metric read at scrape time (pool slots from the metastore)."""

    name: str
    value: float
    labels: Mapping[str, str] = {}


_CUSTOM_HELP = "Custom metric emitted by user code."


def template_fields(template: str) -> list[str]:
    """The variables of a legacy name template, in order."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def glob_shape(template: str) -> str:
    """The template with each variable replaced by `*`, as statsd_exporter matches it."""
    parts = string.Formatter().parse(template)
    return "".join(literal + ("*" if name else "") for literal, name, _, _ in parts)


class Catalog:
    """The metrics by canonical name; a second claim on any of their names fails loudly."""

    def __init__(self, metrics: Iterable[Metric] = ()) -> None:
        self._by_name: dict[str, Metric] = {}
        self._claims: dict[str, Metric] = {}
        for metric in metrics:
            self.register(metric)

    def register(self, metric: Metric) -> Metric:
        """Add a metric; raise DuplicateMetric naming both metrics on any name collision."""
        claims = {
            f"name {metric.name}": metric,
            f"Prometheus name {metric.prometheus_name}": metric,
            f"StatsD pattern {glob_shape(metric.statsd_template)}": metric,
        }
        for claim in claims:
            holder = self._claims.get(claim)
            if holder is not None:
                raise DuplicateMetric(
                    f"{metric.name!r} collides with {holder.name!r}: both claim the {claim}"
                )
        self._claims.update(claims)
        self._by_name[metric.name] = metric
        return metric

    def get(self, name: str) -> Metric | None:
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)


_DT = ("dag_id", "task_id")
_QDT = ("queue", "dag_id", "task_id")
_ALERT = ("channel", "route", "event")

CATALOG = Catalog(
    [
        # DAG processing
        Metric("dag_processing.total_parse_time", "gauge", "seconds", (),
               "Seconds taken to scan and import all DAG files once.",
               "dag_processing.total_parse_time", when_gone="drop"),
        Metric("dag_processing.last_duration", "timer", "seconds", ("file",),
               "Seconds taken to import one DAG file, per file; sent every processor pass, "
               "for a file unchanged since its last import the duration of that import.",
               "dag_processing.last_duration.{file}"),
        Metric("dag_processing.last_run.seconds_ago", "gauge", "seconds", ("file",),
               "Seconds since a DAG file was last processed.",
               "dag_processing.last_run.seconds_ago.{file}", when_gone="drop"),
        Metric("dag_processing.import_errors", "gauge", "", (),
               "DAG files that failed to import in the last scan.",
               "dag_processing.import_errors"),
        Metric("dag_processing.processor_timeouts", "counter", "", ("file",),
               "DAG file imports killed for exceeding dag_file_processor_timeout.",
               "dag_processing.processor_timeouts"),
        Metric("dagbag_size", "gauge", "", (),
               "DAGs found by the last scan of the DAG folders.", "dagbag_size"),
        Metric("import_errors", "gauge", "", ("file",),
               "Import errors recorded in the metastore, per DAG file (read at scrape time)."),
        # Scheduler
        Metric("scheduler_heartbeat", "counter", "", (),
               "Scheduler loop iterations (heartbeats).", "scheduler_heartbeat"),
        Metric("scheduler.scheduler_loop_duration", "timer", "seconds", (),
               "Seconds spent in one scheduler loop iteration.",
               "scheduler.scheduler_loop_duration"),
        Metric("scheduler.tasks.starving", "gauge", "", (),
               "Task instances that cannot be queued because their pool has no open slot.",
               "scheduler.tasks.starving"),
        Metric("scheduler.tasks.executable", "gauge", "", (),
               "Task instances queued by the last loop within every concurrency limit.",
               "scheduler.tasks.executable"),
        Metric("scheduler.dagruns.running", "gauge", "", (),
               "DAG runs in the running state.", "scheduler.dagruns.running"),
        Metric("scheduler.heartbeat_age", "gauge", "seconds", (),
               "Seconds since the scheduler job's latest heartbeat in the metastore "
               "(read at scrape time by the /health scheduler check)."),
        Metric("scheduler.orphaned_tasks.cleared", "counter", "", (),
               "Orphaned task instances reset by the scheduler.",
               "scheduler.orphaned_tasks.cleared"),
        Metric("scheduler.orphaned_tasks.adopted", "counter", "", (),
               "Task instances a scheduler that is gone had queued, adopted (re-queued) "
               "by another scheduler.",
               "scheduler.orphaned_tasks.adopted"),
        Metric("scheduler.schedulers_lost", "counter", "", (),
               "Scheduler jobs whose heartbeat stopped, noticed and marked failed by another "
               "scheduler (several schedulers on PostgreSQL).",
               "scheduler.schedulers_lost"),
        # Executor
        Metric("executor.open_slots", "gauge", "slots", (),
               "Open slots of the executor.", "executor.open_slots"),
        Metric("executor.queued_tasks", "gauge", "", (),
               "Task attempts queued in the executor.", "executor.queued_tasks"),
        Metric("executor.running_tasks", "gauge", "", (),
               "Task attempts running in the executor.", "executor.running_tasks"),
        Metric("executor.worker.running_slots", "gauge", "slots", ("worker", "queue"),
               "Attempts a live Celery worker runs from a queue (its heartbeat in the "
               "metastore).", "executor.worker.running_slots.{worker}.{queue}"),
        Metric("executor.worker.open_slots", "gauge", "slots", ("worker", "queue"),
               "Free slots of a live Celery worker, under each queue it consumes (a worker's "
               "slots are shared by its queues).", "executor.worker.open_slots.{worker}.{queue}"),
        Metric("executor.workers", "gauge", "", (),
               "Live Celery workers (heartbeat within scheduler.heartbeat_timeout).",
               "executor.workers"),
        # Pools
        Metric("pool.open_slots", "gauge", "slots", ("pool",),
               "Open slots of a pool.", "pool.open_slots.{pool}"),
        Metric("pool.queued_slots", "gauge", "slots", ("pool",),
               "Slots of a pool taken by queued task instances.", "pool.queued_slots.{pool}"),
        Metric("pool.running_slots", "gauge", "slots", ("pool",),
               "Slots of a pool taken by running task instances.", "pool.running_slots.{pool}"),
        Metric("pool.scheduled_slots", "gauge", "slots", ("pool",),
               "Slots of a pool wanted by scheduled task instances.",
               "pool.scheduled_slots.{pool}"),
        Metric("pool.starving_tasks", "gauge", "", ("pool",),
               "Task instances waiting for an open slot of a pool.",
               "pool.starving_tasks.{pool}"),
        # Task instances
        Metric("ti.start", "counter", "", _DT,
               "Task attempts started.", "ti.start.{dag_id}.{task_id}"),
        Metric("ti.finish", "counter", "", (*_DT, "state"),
               "Task attempts finished, by final state.", "ti.finish.{dag_id}.{task_id}.{state}"),
        Metric("ti_failures", "counter", "", _DT, "Task attempts that failed.", "ti_failures"),
        Metric("ti_successes", "counter", "", _DT,
               "Task attempts that succeeded.", "ti_successes"),
        Metric("ti.timeouts", "counter", "", _DT,
               "Task attempts stopped by their execution_timeout."),
        Metric("ti.retries", "counter", "", _DT,
               "Failed task attempts that will be retried (up_for_retry)."),
        Metric("ti.scheduled", "gauge", "", _QDT,
               "Task instances in the scheduled state.", "ti.scheduled.{queue}.{dag_id}.{task_id}"),
        Metric("ti.queued", "gauge", "", _QDT,
               "Task instances in the queued state.", "ti.queued.{queue}.{dag_id}.{task_id}"),
        Metric("ti.running", "gauge", "", _QDT,
               "Task instances in the running state.", "ti.running.{queue}.{dag_id}.{task_id}"),
        Metric("ti.up_for_reschedule", "gauge", "", _QDT,
               "Sensors in reschedule mode waiting for their next poke (holding no slot).",
               "ti.up_for_reschedule.{queue}.{dag_id}.{task_id}"),
        Metric("task_instances", "gauge", "", ("state",),
               "Task instances in the metastore by state (read at scrape time)."),
        Metric("task.duration", "timer", "seconds", _DT,
               "Seconds a task attempt ran.", "dag.{dag_id}.{task_id}.duration"),
        Metric("task.queued_duration", "timer", "seconds", (*_DT, "pool"),
               "Seconds a task instance spent queued before running.",
               "dag.{dag_id}.{task_id}.queued_duration"),
        Metric("task.scheduled_duration", "timer", "seconds", _DT,
               "Seconds a task instance spent scheduled before being queued.",
               "dag.{dag_id}.{task_id}.scheduled_duration"),
        Metric("task_instances_without_heartbeats_killed", "counter", "", _DT,
               "Task attempts failed because their heartbeat stopped (zombies).",
               "task_instances_without_heartbeats_killed"),
        Metric("operator_failures", "counter", "", ("operator",),
               "Task attempts that failed, by operator class.", "operator_failures_{operator}"),
        Metric("operator_successes", "counter", "", ("operator",),
               "Task attempts that succeeded, by operator class.",
               "operator_successes_{operator}"),
        # DAG runs
        Metric("dagrun.duration.success", "timer", "seconds", ("dag_id",),
               "Seconds a DAG run took to succeed.", "dagrun.duration.success.{dag_id}"),
        Metric("dagrun.duration.failed", "timer", "seconds", ("dag_id",),
               "Seconds a DAG run took to fail.", "dagrun.duration.failed.{dag_id}"),
        Metric("dagrun.schedule_delay", "timer", "seconds", ("dag_id",),
               "Seconds between a run's scheduled time and its actual start.",
               "dagrun.schedule_delay.{dag_id}"),
        Metric("dagrun.first_task_scheduling_delay", "timer", "seconds", ("dag_id",),
               "Seconds between a run's expected start and its first task's start.",
               "dagrun.{dag_id}.first_task_scheduling_delay"),
        Metric("dagrun.queued_age", "gauge", "seconds", ("dag_id",),
               "Seconds the oldest queued (not yet started) run of a DAG has waited "
               "(read at scrape time)."),
        Metric("dagrun.dependency-check", "timer", "seconds", ("dag_id",),
               "Seconds spent deciding the task instances of a DAG run.",
               "dagrun.dependency-check.{dag_id}"),
        # Callbacks
        Metric("dag.callback_exceptions", "counter", "", ("dag_id",),
               "Exceptions raised by DAG callbacks.", "dag.callback_exceptions"),
        Metric("callback.outcome", "counter", "", ("dag_id", "callback", "status"),
               "Callbacks run, by callback (on_failure_callback...) and outcome status."),
        # SLAs and deadlines
        Metric("sla_missed", "counter", "", _DT, "Task SLA misses raised.", "sla_missed"),
        Metric("deadline.missed", "counter", "", ("dag_id",),
               "DAG run deadlines missed."),
        Metric("deadline.at_risk", "gauge", "", ("dag_id",),
               "Running DAG runs forecast to miss their deadline."),
        Metric("deadline.slack_seconds", "gauge", "seconds", ("dag_id",),
               "Seconds left before the nearest deadline of a DAG's runs (negative once missed).",
               when_gone="drop"),
        # Alerts
        Metric("alert.delivered", "counter", "", _ALERT, "Notifications delivered."),
        Metric("alert.failed", "counter", "", _ALERT,
               "Notifications not delivered after alerts.max_attempts attempts (once per"
               " alert; retried until alerts.max_age)."),
        Metric("alert.suppressed", "counter", "", _ALERT,
               "Notifications suppressed by deduplication or rate limits."),
        Metric("alert.delivery_latency", "timer", "seconds", ("channel",),
               "Seconds from the event that caused a notification to its delivery."),
        # The deployment itself
        Metric("health.check", "gauge", "", ("check",),
               "Whether a /health check passes: 1 passes, 0 fails (read at scrape time)."),
        Metric("build_info", "gauge", "", ("version",),
               "Always 1; the version label tells which dagwatch is running.", when_gone="drop"),
    ]
)  # fmt: skip
