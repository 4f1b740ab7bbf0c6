"""`dagwatch metrics ...`: the metric catalog, so users can find a name without the source."""

from __future__ import annotations

import click

from engine.cli.output import echo_rows, output_option
from engine.cli.usage import Group
from metrics import render_catalog_rows

COLUMNS = ("name", "type", "unit", "labels", "legacy_name", "prometheus_name", "when_gone", "help")


@click.group(cls=Group)
def metrics() -> None:
    """Metrics dagwatch emits (StatsD, OpenTelemetry, Prometheus)."""


@metrics.command()
@output_option
def catalog(output: str) -> None:
    """Every metric: type, unit, labels, StatsD legacy and Prometheus names, what a
    gauge's vanished series becomes in push backends (zero or drop), help.

    Reads only the catalog declared in code: no metastore, no DAGWATCH_HOME needed.
    """
    echo_rows(render_catalog_rows(), COLUMNS, output)
