"""The statsd_exporter mapping: up to date, and onto the native endpoint's names and labels."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from metrics import CATALOG, Metric
from metrics.guard import MAX_STATSD_NAME_LENGTH, legacy_name
from metrics.mapping import DEFAULT_PATH, main, mapping_entries, render

REPO = Path(__file__).resolve().parents[2]


def test_the_mapping_file_is_up_to_date() -> None:
    path = REPO / "dashboards" / "statsd_exporter" / "mapping.yml"
    assert path == DEFAULT_PATH
    assert path.read_text() == render(), (
        f"{path.relative_to(REPO)} is stale: regenerate it with `python -m metrics.mapping`"
    )
    assert main(["--check"]) == 0


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "mapping.yml"
    stale.write_text("mappings: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "metrics.mapping", "--check", "--output", str(stale)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert result.returncode == 1
    assert "stale: run `python -m metrics.mapping`" in result.stderr


def resolve(name: str, entries: list[dict]) -> tuple[str, dict[str, str]] | None:
    """statsd_exporter's matching: globs in file order (one `*` per segment), then regexes."""
    for entry in entries:
        if entry.get("match_type") == "regex":
            continue
        pattern = "^" + re.escape(entry["match"]).replace(r"\*", "([^.]+)") + "$"
        found = re.match(pattern, name)
        if found:
            return entry["name"], _labels(entry, found)
    for entry in entries:
        if entry.get("match_type") == "regex":
            found = re.match(entry["match"], name)
            if found:
                return entry["name"], _labels(entry, found)
    return None


def _labels(entry: dict, found: re.Match[str]) -> dict[str, str]:
    return {
        label: re.sub(r"\$(\d+)", lambda m: found.group(int(m.group(1))), value)
        for label, value in entry.get("labels", {}).items()
    }


@pytest.mark.parametrize("metric", list(CATALOG), ids=lambda m: m.name)
def test_every_legacy_and_canonical_name_maps_to_the_native_name(metric: Metric) -> None:
    entries = mapping_entries()
    values = {label: f"{label}_value" for label in metric.labels}
    legacy = "dagwatch." + legacy_name(metric.statsd_template, values, MAX_STATSD_NAME_LENGTH)
    name, labels = resolve(legacy, entries)
    assert name == metric.prometheus_name
    template_labels = {k: v for k, v in values.items() if f"{{{k}}}" in metric.statsd_template}
    assert labels == template_labels
    assert resolve(f"dagwatch.{metric.name}", entries) == (metric.prometheus_name, {})


def test_the_prefix_can_be_changed() -> None:
    entries = mapping_entries(prefix="airflow")
    assert resolve("airflow.ti.finish.etl.load.success", entries) == (
        "dagwatch_ti_finish_total",
        {"dag_id": "etl", "task_id": "load", "state": "success"},
    )
