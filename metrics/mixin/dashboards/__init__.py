"""The four dashboards, one module each; each panel's description says what to check and
what to do when it looks wrong (the longer answers are in docs/runbooks.md)."""

from __future__ import annotations

from metrics.mixin.dashboards import dags, pools, scheduler, slas
from metrics.mixin.dashboards.common import SCRAPE_JOB

#: file stem under dashboards/grafana -> the function building that dashboard
DASHBOARDS = {
    "scheduler": scheduler.dashboard,
    "dags": dags.dashboard,
    "pools": pools.dashboard,
    "slas": slas.dashboard,
}

__all__ = ["DASHBOARDS", "SCRAPE_JOB"]
