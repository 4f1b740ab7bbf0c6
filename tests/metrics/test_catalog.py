"""The catalog's invariants: Airflow names kept, Prometheus naming rules, bounded labels."""

from __future__ import annotations

import subprocess
import sys

import pytest

from metrics import CATALOG, render_catalog_rows
from metrics.catalog import (
    ALLOWED_LABELS,
    FORBIDDEN_LABELS,
    SINGLE_USE_LABELS,
    Catalog,
    Metric,
    glob_shape,
    template_fields,
)
from metrics.errors import DuplicateMetric

#: Everything the brief names; the catalog may hold more, never less.
REQUIRED = {
    "dag_processing.total_parse_time": "gauge",
    "dag_processing.last_duration": "timer",
    "dag_processing.last_run.seconds_ago": "gauge",
    "dag_processing.import_errors": "gauge",
    "dag_processing.processor_timeouts": "counter",
    "dagbag_size": "gauge",
    "scheduler_heartbeat": "counter",
    "scheduler.scheduler_loop_duration": "timer",
    "scheduler.tasks.starving": "gauge",
    "scheduler.tasks.executable": "gauge",
    "scheduler.dagruns.running": "gauge",
    "scheduler.orphaned_tasks.cleared": "counter",
    "scheduler.orphaned_tasks.adopted": "counter",
    "executor.open_slots": "gauge",
    "executor.queued_tasks": "gauge",
    "executor.running_tasks": "gauge",
    "pool.open_slots": "gauge",
    "pool.queued_slots": "gauge",
    "pool.running_slots": "gauge",
    "pool.scheduled_slots": "gauge",
    "pool.starving_tasks": "gauge",
    "ti.start": "counter",
    "ti.finish": "counter",
    "ti_failures": "counter",
    "ti_successes": "counter",
    "ti.scheduled": "gauge",
    "ti.queued": "gauge",
    "ti.running": "gauge",
    "ti.timeouts": "counter",
    "ti.retries": "counter",
    "task.duration": "timer",
    "task.queued_duration": "timer",
    "task.scheduled_duration": "timer",
    "task_instances_without_heartbeats_killed": "counter",
    "operator_failures": "counter",
    "operator_successes": "counter",
    "dagrun.duration.success": "timer",
    "dagrun.duration.failed": "timer",
    "dagrun.schedule_delay": "timer",
    "dagrun.first_task_scheduling_delay": "timer",
    "dagrun.dependency-check": "timer",
    "dag.callback_exceptions": "counter",
    "callback.outcome": "counter",
    "task_instances": "gauge",
    "sla_missed": "counter",
    "deadline.missed": "counter",
    "deadline.at_risk": "gauge",
    "deadline.slack_seconds": "gauge",
    "alert.delivered": "counter",
    "alert.failed": "counter",
    "alert.suppressed": "counter",
    "alert.delivery_latency": "timer",
    "import_errors": "gauge",
    "build_info": "gauge",
}

#: Airflow's StatsD names, so dashboards built on Airflow keep working.
AIRFLOW_LEGACY = {
    "ti.finish": "ti.finish.{dag_id}.{task_id}.{state}",
    "ti.start": "ti.start.{dag_id}.{task_id}",
    "task.duration": "dag.{dag_id}.{task_id}.duration",
    "task.queued_duration": "dag.{dag_id}.{task_id}.queued_duration",
    "dag_processing.last_duration": "dag_processing.last_duration.{file}",
    "dag_processing.last_run.seconds_ago": "dag_processing.last_run.seconds_ago.{file}",
    "pool.open_slots": "pool.open_slots.{pool}",
    "ti.running": "ti.running.{queue}.{dag_id}.{task_id}",
    "dagrun.duration.success": "dagrun.duration.success.{dag_id}",
    "dagrun.first_task_scheduling_delay": "dagrun.{dag_id}.first_task_scheduling_delay",
    "dagrun.dependency-check": "dagrun.dependency-check.{dag_id}",
    "operator_failures": "operator_failures_{operator}",
    "ti_failures": "ti_failures",
}

#: promtool's lint rejects these as name segments (abbreviated units).
UNIT_ABBREVIATIONS = set("s ms us ns sec b kb mb gb tb pb m h d".split())


def test_catalog_covers_every_required_metric_with_its_type() -> None:
    assert {name: CATALOG.get(name) and CATALOG.get(name).type for name in REQUIRED} == REQUIRED
    assert len(CATALOG) >= len(REQUIRED)


@pytest.mark.parametrize("name", sorted(AIRFLOW_LEGACY))
def test_airflow_legacy_names_are_kept(name: str) -> None:
    assert CATALOG.get(name).legacy == AIRFLOW_LEGACY[name]


@pytest.mark.parametrize("metric", list(CATALOG), ids=lambda m: m.name)
def test_prometheus_naming_rules(metric: Metric) -> None:
    name = metric.prometheus_name
    assert name.startswith("dagwatch_") and name == name.lower()
    assert name.endswith("_total") == (metric.type == "counter")
    if metric.type == "timer":
        assert name.endswith("_seconds")
    if metric.type == "gauge" and metric.unit:
        assert metric.unit in name.split("_")
    assert not UNIT_ABBREVIATIONS.intersection(name.split("_"))
    assert not name.endswith(("_bucket", "_count", "_sum", "_created"))
    assert metric.help and metric.help[0].isupper()


@pytest.mark.parametrize("metric", list(CATALOG), ids=lambda m: m.name)
def test_labels_are_bounded(metric: Metric) -> None:
    assert not FORBIDDEN_LABELS.intersection(metric.labels)
    single_use = {label for label, owner in SINGLE_USE_LABELS.items() if owner == metric.name}
    allowed = ALLOWED_LABELS | single_use
    assert set(metric.labels) <= allowed
    assert set(template_fields(metric.statsd_template)) <= set(metric.labels)


def test_no_run_scoped_label_is_ever_allowed() -> None:
    assert {"run_id", "try_number", "hostname"} <= FORBIDDEN_LABELS
    assert not FORBIDDEN_LABELS & ALLOWED_LABELS
    assert "version" not in ALLOWED_LABELS  # build_info's, and only build_info's


def test_names_are_unique_in_every_naming_scheme() -> None:
    metrics = list(CATALOG)
    for derive in (
        lambda m: m.name,
        lambda m: m.prometheus_name,
        lambda m: m.otel_name,
        lambda m: glob_shape(m.statsd_template),
    ):
        names = [derive(m) for m in metrics]
        assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (("dag_id", "run_id"), "forbidden labels ['run_id']"),
        (("hostname",), "forbidden labels ['hostname']"),
        (("version",), "label 'version' is not in the allowed set"),
        (("team",), "label 'team' is not in the allowed set"),
    ],
)
def test_a_metric_with_an_unbounded_label_is_refused(labels: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Metric("ti.bad", "counter", "", labels, "Bad.")


def test_registration_collision_names_both_metrics() -> None:
    catalog = Catalog([Metric("pool.open_slots", "gauge", "slots", ("pool",), "Open.")])
    with pytest.raises(
        DuplicateMetric, match=r"'pool-open_slots' collides with 'pool\.open_slots'"
    ):
        catalog.register(Metric("pool-open_slots", "gauge", "slots", ("pool",), "Same name."))
    with pytest.raises(DuplicateMetric, match=r"'pool\.open_slots' collides"):
        catalog.register(Metric("pool.open_slots", "gauge", "", (), "Again."))


def test_derived_names() -> None:
    duration = CATALOG.get("task.duration")
    assert duration.prometheus_name == "dagwatch_task_duration_seconds"
    assert (duration.otel_name, duration.otel_unit) == ("dagwatch.task.duration", "s")
    assert CATALOG.get("ti.finish").prometheus_name == "dagwatch_ti_finish_total"
    assert CATALOG.get("dagrun.dependency-check").prometheus_name == (
        "dagwatch_dagrun_dependency_check_seconds"
    )
    parse = CATALOG.get("dag_processing.total_parse_time")
    assert parse.prometheus_name == "dagwatch_dag_processing_total_parse_time_seconds"
    assert CATALOG.get("pool.open_slots").prometheus_name == "dagwatch_pool_open_slots"
    assert CATALOG.get("ti.timeouts").statsd_template == "ti.timeouts.{dag_id}.{task_id}"


def test_catalog_rows_for_the_cli() -> None:
    rows = render_catalog_rows()
    assert len(rows) == len(CATALOG)
    finish = next(row for row in rows if row["name"] == "ti.finish")
    assert finish == {
        "name": "ti.finish",
        "type": "counter",
        "unit": "",
        "labels": "dag_id,task_id,state",
        "legacy_name": "ti.finish.{dag_id}.{task_id}.{state}",
        "prometheus_name": "dagwatch_ti_finish_total",
        "when_gone": "",
        "help": "Task attempts finished, by final state.",
    }


def test_importing_metrics_loads_no_backend_library() -> None:
    code = (
        "import sys, metrics, metrics.stats, metrics.catalog, metrics.guard\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('prometheus_client', 'opentelemetry', 'engine', 'requests')]\n"
        "assert not heavy, heavy\n"
        "assert metrics.stats.target.backends == ()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
