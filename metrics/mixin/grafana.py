"""Grafana dashboard JSON (the classic model) from plain dicts.

Grafana's Python Foundation SDK would give the same JSON through builder classes; four
dashboards of time series, stats and tables need only a few dicts, and plain data keeps
the generator a dependency-free part of `metrics`.

Every panel and every query variable reads the `datasource` template variable, whose
default is the `DS_PROMETHEUS` input: an import through the UI asks for the Prometheus
to use, and a file-provisioned dashboard falls back to the default Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Grafana 12's dashboard schema version.
SCHEMA_VERSION = 41
GRAFANA_VERSION = "12.0.0"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
INPUT = "DS_PROMETHEUS"
TAG = "dagwatch"
_PANEL_NAMES = {
    "timeseries": "Time series",
    "stat": "Stat",
    "table": "Table",
    "bargauge": "Bar gauge",
}


@dataclass(frozen=True)
class Query:
    """One PromQL target and its legend."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """A panel: what it shows, its unit, and what to do when it looks wrong."""

    title: str
    description: str
    queries: Sequence[Query]
    unit: str
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    stacked: bool = False
    thresholds: Sequence[tuple[float, str]] = ()


@dataclass(frozen=True)
class Row:
    """A titled group of panels."""

    title: str
    panels: Sequence[Panel]


@dataclass(frozen=True)
class Variable:
    """A query variable over one label of one series (multi-select, All = any value)."""

    name: str
    label: str
    query: str


@dataclass(frozen=True)
class Dashboard:
    """One dashboard of rows."""

    uid: str
    title: str
    description: str
    rows: Sequence[Row]
    variables: Sequence[Variable] = field(default_factory=tuple)


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def render(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, ready to import or provision."""
    panels = list(_layout(dashboard.rows))
    kinds = sorted({panel["type"] for panel in panels if panel["type"] != "row"})
    return {
        "__inputs": [
            {
                "name": INPUT,
                "label": "Prometheus",
                "description": "The Prometheus that scrapes dagwatch's /metrics",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__elements": {},
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": GRAFANA_VERSION},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            *({"type": "panel", "id": k, "name": _PANEL_NAMES[k], "version": ""} for k in kinds),
        ],
        "annotations": {"list": [_builtin_annotations()]},
        "description": dashboard.description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "tags": [TAG],
                "title": "dagwatch",
                "type": "dashboards",
            }
        ],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": [TAG],
        "templating": {"list": [_datasource_variable(), *map(_variable, dashboard.variables)]},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": dashboard.title,
        "uid": dashboard.uid,
        "version": 1,
    }


def _builtin_annotations() -> dict[str, Any]:
    return {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }


def _datasource_variable() -> dict[str, Any]:
    value = f"${{{INPUT}}}"
    return {
        "current": {"text": value, "value": value},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }


def _variable(variable: Variable) -> dict[str, Any]:
    return {
        "allValue": ".*",
        "current": {"text": ["All"], "value": ["$__all"]},
        "datasource": DATASOURCE,
        "definition": variable.query,
        "hide": 0,
        "includeAll": True,
        "label": variable.label,
        "multi": True,
        "name": variable.name,
        "options": [],
        "query": {"qryType": 1, "query": variable.query, "refId": "PrometheusVariableQuery"},
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }


def _layout(rows: Iterable[Row]) -> Iterable[dict[str, Any]]:
    """Rows one under the other, panels left to right, wrapping at Grafana's 24 columns."""
    next_id, y = 1, 0
    for row in rows:
        yield {
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            "id": next_id,
            "panels": [],
            "title": row.title,
            "type": "row",
        }
        next_id, y, x, height = next_id + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, height = 0, y + height, 0
            yield _panel(panel, next_id, {"h": panel.height, "w": panel.width, "x": x, "y": y})
            next_id, x, height = next_id + 1, x + panel.width, max(height, panel.height)
        y += height


def _panel(panel: Panel, panel_id: int, grid: dict[str, int]) -> dict[str, Any]:
    instant = panel.kind in ("table", "bargauge")
    targets = [
        {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": query.expr,
            "format": "table" if panel.kind == "table" else "time_series",
            "instant": instant,
            "legendFormat": query.legend or "__auto",
            "range": not instant,
            "refId": chr(ord("A") + i),
        }
        for i, query in enumerate(panel.queries)
    ]
    return {
        "datasource": DATASOURCE,
        "description": panel.description,
        "fieldConfig": {"defaults": _defaults(panel), "overrides": []},
        "gridPos": grid,
        "id": panel_id,
        "options": _options(panel),
        "targets": targets,
        "title": panel.title,
        "type": panel.kind,
    }


def _defaults(panel: Panel) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": color, "value": value} for value, color in panel.thresholds]
    defaults: dict[str, Any] = {
        "color": {"mode": "thresholds" if panel.kind == "stat" else "palette-classic"},
        "thresholds": {"mode": "absolute", "steps": steps},
        "unit": panel.unit,
    }
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "fillOpacity": 20 if panel.stacked else 5,
            "lineWidth": 1,
            "showPoints": "auto",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if panel.stacked else "none"},
        }
    return defaults


def _options(panel: Panel) -> dict[str, Any]:
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if panel.kind == "stat":
        return {
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": reduce,
            "textMode": "auto",
        }
    if panel.kind == "bargauge":
        return {"displayMode": "gradient", "orientation": "horizontal", "reduceOptions": reduce}
    if panel.kind == "table":
        return {"cellHeight": "sm", "showHeader": True}
    return {
        "legend": {"calcs": ["lastNotNull", "max"], "displayMode": "table", "placement": "bottom"},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
