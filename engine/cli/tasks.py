"""`dagwatch tasks ...`: run and inspect single tasks."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click

from engine.cli import CliContext, pass_cli
from engine.cli.dags import DATETIME, load_dag
from engine.cli.usage import Group
from engine.exceptions import DagwatchError, NotFound


@click.group(cls=Group)
def tasks() -> None:
    """Run and inspect single tasks."""


@tasks.command("test")
@click.argument("dag_id")
@click.argument("task_id")
@click.option("--logical-date", type=DATETIME, help="Logical date of the run [default: now].")
@pass_cli
def test(cli: CliContext, dag_id: str, task_id: str, logical_date: datetime | None) -> None:
    """Run one task once, ignoring its dependencies, and print its log.

    As in Airflow, nothing is recorded: the attempt runs against a scratch metastore, so
    XComs of upstream tasks are not available. Exits with 1 when the task fails.
    """
    from engine import runner
    from engine.inprocess import run_task_in_scratch
    from engine.states import TaskState

    dag = load_dag(cli, dag_id)
    if task_id not in dag.task_dict:
        raise NotFound(f"task {task_id!r} not found in DAG {dag_id!r}")
    when = logical_date or datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="dagwatch-tasks-test-") as scratch:
        result = run_task_in_scratch(
            cli.config, dag, task_id, logical_date=when, scratch=Path(scratch)
        )
        runner.print_log(result.log_path)
    click.echo(f"{task_id}: {result.state}")
    if result.state not in (TaskState.SUCCESS, TaskState.SKIPPED):
        raise DagwatchError(f"task {task_id} {result.state}: {result.error}")
