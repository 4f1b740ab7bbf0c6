"""The shipped dashboards, alert rules and configs: fresh, well-formed, and naming only
metrics of the catalog; rules checked and unit-tested by promtool."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metrics.catalog import CATALOG
from metrics.mixin import __main__ as mixin_cli
from metrics.mixin import grafana, render_all
from metrics.mixin.dashboards import SCRAPE_JOB
from tests.dashboards.conftest import (
    DASHBOARDS,
    PROMETHEUS,
    catalog_names_in,
    dashboards,
    panels,
    rules,
    tool,
)

ROOT = DASHBOARDS.parent
#: Catalog metrics no panel shows, each for a reason docs/dashboards.md gives.
DELIBERATELY_UNSHOWN = {"ti_successes"}
#: What each dashboard must show (the issue's list), as catalog names.
MUST_SHOW = {
    "scheduler": {
        "scheduler.heartbeat_age",
        "scheduler.scheduler_loop_duration",
        "executor.open_slots",
        "executor.queued_tasks",
        "executor.running_tasks",
        "dag_processing.last_duration",
        "dag_processing.import_errors",
        "task_instances_without_heartbeats_killed",
        "scheduler.orphaned_tasks.cleared",
    },
    "dags": {
        "ti.finish",
        "dagrun.duration.success",
        "task.duration",
        "dagrun.schedule_delay",
        "task.queued_duration",
    },
    "pools": {
        "pool.open_slots",
        "pool.queued_slots",
        "pool.running_slots",
        "pool.starving_tasks",
        "task.queued_duration",
    },
    "slas": {
        "sla_missed",
        "deadline.at_risk",
        "deadline.slack_seconds",
        "alert.delivered",
        "alert.failed",
        "alert.delivery_latency",
    },
}
REQUIRED_ALERTS = {
    "DagwatchSchedulerDown",
    "DagwatchSchedulerHeartbeatStale",
    "DagwatchDagProcessorStale",
    "DagwatchImportErrors",
    "DagwatchTaskFailureRatioHigh",
    "DagwatchSlaMissed",
    "DagwatchDeadlineAtRisk",
    "DagwatchRunNotStarted",
    "DagwatchPoolStarving",
    "DagwatchExecutorSaturated",
    "DagwatchQueueDelayHigh",
    "DagwatchAlertDeliveriesFailing",
}
_VARIABLE = re.compile(r"\$(\w+)")
_GRAFANA_BUILTINS = {"__rate_interval", "__range", "__interval"}


def test_the_committed_files_are_what_the_catalog_generates() -> None:
    assert mixin_cli.main(["--check"]) == 0


def test_check_mode_names_a_stale_file(tmp_path: Path) -> None:
    assert mixin_cli.main(["--output", str(tmp_path)]) == 0
    stale = tmp_path / "grafana" / "pools.json"
    stale.write_text(stale.read_text().replace("Saturation", "Saturation (old)"))
    result = subprocess.run(
        [sys.executable, "-m", "metrics.mixin", "--check", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (f"{stale} is stale: run `python -m metrics.mixin`")


def test_links_follow_the_runbook_base_and_grafana_url() -> None:
    text = render_all("https://docs.example.com/dagwatch/runbooks", "https://grafana.example.com/")[
        "prometheus/alerts.yml"
    ]
    for rule in yaml.safe_load(text)["groups"][0]["rules"]:
        name = rule["alert"]
        assert rule["annotations"]["runbook_url"] == (
            f"https://docs.example.com/dagwatch/runbooks#{name.lower()}"
        )
        assert rule["annotations"]["dashboard_url"].startswith("https://grafana.example.com/d/")


@pytest.mark.parametrize("stem", sorted(MUST_SHOW))
def test_a_dashboard_is_importable_and_every_panel_is_complete(stem: str) -> None:
    dashboard = dashboards()[stem]
    assert dashboard["schemaVersion"] == grafana.SCHEMA_VERSION
    assert dashboard["uid"].startswith("dagwatch-") and dashboard["title"]
    (source,) = dashboard["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"

    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used: set[str] = set()
    for panel in panels(dashboard):
        where = f"{stem}: panel {panel['title']!r}"
        assert panel["datasource"] == grafana.DATASOURCE, where
        assert panel["description"].strip(), where
        assert panel["fieldConfig"]["defaults"]["unit"], where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == grafana.DATASOURCE, where
            used |= set(_VARIABLE.findall(target["expr"]))
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == grafana.DATASOURCE
            catalog_names_in(variable["query"]["query"])
            used |= set(_VARIABLE.findall(variable["query"]["query"]))
    assert used - _GRAFANA_BUILTINS <= set(variables), "a query uses an undefined variable"
    assert set(variables) - {"datasource"} <= used, "a variable no query uses"


def test_the_dashboards_offer_dag_task_and_pool_variables() -> None:
    names = {v["name"] for d in dashboards().values() for v in d["templating"]["list"]}
    assert {"datasource", "dag_id", "task_id", "pool"} <= names


@pytest.mark.parametrize("stem", sorted(MUST_SHOW))
def test_a_dashboard_shows_what_it_promises(stem: str) -> None:
    shown = {
        name
        for panel in panels(dashboards()[stem])
        for target in panel["targets"]
        for name in catalog_names_in(target["expr"])
    }
    assert MUST_SHOW[stem] <= shown


def test_every_catalog_metric_is_on_a_panel_unless_deliberately_left_out() -> None:
    shown = {
        name
        for dashboard in dashboards().values()
        for panel in panels(dashboard)
        for target in panel["targets"]
        for name in catalog_names_in(target["expr"])
    }
    unshown = {metric.name for metric in CATALOG} - shown
    assert unshown == DELIBERATELY_UNSHOWN
    section = (ROOT / "docs" / "dashboards.md").read_text()
    for name in unshown:
        assert f"`{name}`" in section, f"docs/dashboards.md must say why {name} is left out"


def test_the_rules_are_named_labelled_annotated_and_linked() -> None:
    runbook = (ROOT / "docs" / "runbooks.md").read_text()
    sections = re.findall(r"^## (\S+)$", runbook, flags=re.MULTILINE)
    uids = {d["uid"] for d in dashboards().values()}
    found = rules()
    names = [rule["alert"] for rule in found]
    assert REQUIRED_ALERTS <= set(names)
    assert sections == names, "docs/runbooks.md has one section per alert, in rule order"
    for rule in found:
        name = rule["alert"]
        assert re.fullmatch(r"Dagwatch(?:[A-Z][a-z0-9]*)+", name), name
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        assert notes["runbook_url"].endswith(f"runbooks.md#{name.lower()}"), name
        uid = notes["dashboard_url"].split("/d/", 1)[1].split("?", 1)[0]
        assert uid in uids, name
        catalog_names_in(rule["expr"])


def test_every_rule_has_a_case_that_fires_and_one_that_must_not() -> None:
    cases = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fires, silent = set(), set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert fires == names
    assert silent == names


def test_promtool_checks_the_rules_and_the_scrape_config() -> None:
    promtool = tool("promtool")
    for args in (
        ["check", "rules", "alerts.yml"],
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "alerts_test.yml"],
    ):
        result = subprocess.run(
            [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout


def test_the_scrape_config_and_provisioning_point_at_what_ships() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == SCRAPE_JOB and job["metrics_path"] == "/metrics"
    assert config["rule_files"] == ["alerts.yml"]
    provisioning = DASHBOARDS / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "dagwatch.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "dagwatch.yml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file" and provider["options"]["path"] == "${DAGWATCH_DASHBOARDS}"


def _collector_name(otel_name: str, unit: str, kind: str) -> str:
    """The OpenTelemetry Collector's Prometheus name (its translator's rules): characters
    outside [a-zA-Z0-9_] become `_`, the unit's word is appended unless the name has it
    (units in braces are annotations, dropped), monotonic sums end in `_total`."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", otel_name)
    words = {"s": "seconds", "By": "bytes"}.get(unit, "")
    if words and words not in name.split("_"):
        name = f"{name}_{words}"
    if kind == "counter":
        name = f"{name}_total"
    return name


def test_the_otel_collector_example_gives_the_names_the_dashboards_read() -> None:
    config = yaml.safe_load((DASHBOARDS / "otel" / "collector.yml").read_text())
    pipeline = config["service"]["pipelines"]["metrics"]
    assert pipeline["receivers"] == ["otlp"] and pipeline["exporters"] == ["prometheus"]
    assert "deltatocumulative" in pipeline["processors"]  # dagwatch exports deltas
    for metric in CATALOG:
        assert (
            _collector_name(metric.otel_name, metric.otel_unit, metric.type)
            == metric.prometheus_name
        ), metric.name
