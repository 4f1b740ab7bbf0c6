"""What the dashboard tests share: the shipped files, parsed, and the Prometheus tools."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from metrics.catalog import CATALOG

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
PROMETHEUS = DASHBOARDS / "prometheus"
_SERIES = re.compile(r"\bdagwatch_[a-z0-9_]+")
_TIMER_SUFFIXES = ("_bucket", "_sum", "_count")


def tool(name: str) -> str:
    """The path of a Prometheus binary; skipped with a reason outside CI, failed in CI."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not on PATH (Debian package: prometheus)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        print(reason)
        pytest.skip(reason)
    return path


def dashboards() -> dict[str, dict[str, Any]]:
    """file stem -> the dashboard JSON, as committed."""
    return {
        path.stem: json.loads(path.read_text())
        for path in sorted((DASHBOARDS / "grafana").glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that show data (rows left out)."""
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def rules() -> list[dict[str, Any]]:
    """Every alert rule of the committed rule file."""
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def catalog_names_in(expr: str) -> set[str]:
    """The catalog metrics an expression reads; an unknown series name raises."""
    by_series = {metric.prometheus_name: metric for metric in CATALOG}
    found = set()
    for name in _SERIES.findall(expr):
        metric = by_series.get(name)
        if metric is None:
            for suffix in _TIMER_SUFFIXES:
                base = by_series.get(name.removesuffix(suffix))
                if name.endswith(suffix) and base is not None and base.type == "timer":
                    metric = base
        if metric is None:
            raise AssertionError(f"{name} (in {expr!r}) is not a series of any catalog metric")
        found.add(metric.name)
    return found
