"""`dagwatch sla ...`: the recorded task SLA misses and missed DAG-run deadlines."""

from __future__ import annotations

import click

from alerts.sla import list_misses
from engine.cli import CliContext, pass_cli
from engine.cli.output import echo_rows, output_option
from engine.cli.usage import NON_NEGATIVE_INT, Group

COLUMNS = ("kind", "dag_id", "run_id", "task_id", "deadline", "detected_at", "state", "notified")


@click.group(cls=Group)
def sla() -> None:
    """Task SLA misses and missed DAG-run deadlines."""


@sla.command("list")
@click.option("--dag-id", default=None, help="Only the misses of this DAG.")
@click.option(
    "--limit", type=NON_NEGATIVE_INT, default=100, show_default=True, help="At most this many."
)
@output_option
@pass_cli
def list_(cli: CliContext, dag_id: str | None, limit: int, output: str) -> None:
    """List recorded misses, newest first (task_id is empty for a run's deadline)."""
    with cli.store.session(readonly=True) as session:
        rows = [
            {
                "kind": miss.kind,
                "dag_id": miss.dag_id,
                "run_id": miss.run_id,
                "task_id": miss.task_id or None,
                "deadline": miss.deadline,
                "detected_at": miss.detected_at,
                "state": miss.state,
                "notified": miss.notified,
            }
            for miss in list_misses(session, dag_id=dag_id, limit=limit)
        ]
    echo_rows(rows, COLUMNS, output)
