"""dagwatch's monitoring mixin, generated from the metric catalog: `python -m metrics.mixin`.

It writes the Grafana dashboards (`dashboards/grafana/*.json`) and the Prometheus alert
rules (`dashboards/prometheus/alerts.yml`); the rest of `dashboards/` (scrape config,
rule tests, provisioning, the OTel Collector example) is written by hand. Dashboards
and rules name metrics only through the catalog (`metrics.mixin.promql.series`), so a
renamed or dropped metric fails the generation instead of emptying a panel, and the
test suite fails when the committed files differ from what the catalog gives.

The generator lives in `metrics` (a leaf, as `metrics.mapping` for the statsd_exporter
mapping) because it needs only the catalog; `dashboards/` holds what users load.
"""

from __future__ import annotations

import json
from pathlib import Path

from metrics.mixin import dashboards, grafana, rules

ROOT = Path(__file__).resolve().parents[2] / "dashboards"
GRAFANA_DIR = "grafana"
RULES_FILE = "prometheus/alerts.yml"


def render_all(
    runbook_base: str = rules.DEFAULT_RUNBOOK_BASE,
    grafana_url: str = rules.DEFAULT_GRAFANA_URL,
) -> dict[str, str]:
    """Every generated file: its path under `dashboards/` -> its text."""
    files = {
        f"{GRAFANA_DIR}/{name}.json": json.dumps(grafana.render(build()), indent=2) + "\n"
        for name, build in dashboards.DASHBOARDS.items()
    }
    files[RULES_FILE] = rules.render(runbook_base=runbook_base, grafana_url=grafana_url)
    return files
