"""`dagwatch tasks ...`: run and inspect single tasks, list and clear task states."""

from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from engine.cli import CliContext, pass_cli
from engine.cli.dags import load_dag
from engine.cli.output import echo_object, echo_rows, output_option, render_rows
from engine.cli.runs import confirm_or_refuse
from engine.cli.usage import DATETIME, NAME, NON_NEGATIVE_INT, Group
from engine.exceptions import DagwatchError, NotFound

if TYPE_CHECKING:
    from engine.api import TaskRef


@click.group(cls=Group)
def tasks() -> None:
    """Run and inspect single tasks; list and clear task states."""


@tasks.command("test")
@click.argument("dag_id", type=NAME)
@click.argument("task_id", type=NAME)
@click.option("--logical-date", type=DATETIME, help="Logical date of the run [default: now].")
@pass_cli
def test(cli: CliContext, dag_id: str, task_id: str, logical_date: datetime | None) -> None:
    """Run one task once, ignoring its dependencies, and print its log.

    As in Airflow, nothing is recorded: the attempt runs against a scratch metastore, so
    XComs of upstream tasks are not available. Exits with 1 when the task fails. A sensor
    in reschedule mode pokes once: up_for_reschedule is not a failure.
    """
    from engine.execution import runner
    from engine.execution.dag_test import run_task_in_scratch
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
    if result.state is TaskState.UP_FOR_RESCHEDULE and result.next_retry_at:
        click.echo(f"{task_id}: {result.state} (next poke at {result.next_retry_at.isoformat()})")
        return
    click.echo(f"{task_id}: {result.state}")
    if result.state not in (TaskState.SUCCESS, TaskState.SKIPPED):
        raise DagwatchError(f"task {task_id} {result.state}: {result.error}")


TASK_STATE_COLUMNS = [
    "dag_id",
    "run_id",
    "task_id",
    "state",
    "try_number",
    "start_date",
    "end_date",
    "duration",
    "hostname",
]


@tasks.command("states-for-dag-run")
@click.argument("dag_id", type=NAME)
@click.argument("run_id", type=NAME)
@output_option
@pass_cli
def states_for_dag_run(cli: CliContext, dag_id: str, run_id: str, output: str) -> None:
    """List the task instances of one DAG run with their state and last attempt; the
    instances of a mapped task carry their map_index."""
    from engine import api

    rows = api.task_states(cli.store, dag_id, run_id)
    names = _task_display_names(cli, dag_id)
    for row in rows:
        if row["map_index"] < 0:  # not an instance of a mapped task
            del row["map_index"]
        if names:  # a DAG with `task_display_name=`s: every row says its name
            row["task_display_name"] = names.get(row["task_id"], row["task_id"])
    columns = TASK_STATE_COLUMNS
    if any("map_index" in row for row in rows):
        columns = [*columns[:3], "map_index", *columns[3:]]
    if names:
        columns = [*columns[:3], "task_display_name", *columns[3:]]
    echo_rows(rows, columns, output, optional={"map_index", "task_display_name"})


def _task_display_names(cli: CliContext, dag_id: str) -> dict[str, str]:
    """task_id -> `task_display_name=` of the DAG's tasks that have one (one row read)."""
    from engine.store.models import Dag

    with cli.store.session(readonly=True) as session:
        row = session.get(Dag, dag_id)
        tasks = (row.serialized or {}).get("tasks", []) if row is not None else []
    return {t["task_id"]: t["task_display_name"] for t in tasks if t.get("task_display_name")}


def _regex(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise click.BadParameter(f"{value!r} is not a valid regex: {exc}") from None
    return value


def _echo_refs(refs: list[TaskRef], state_label: str = "state", reason: bool = False) -> None:
    columns = ["run_id", "task_id", state_label, "try_number", *(["reason"] if reason else [])]
    rows = [{**asdict(ref), state_label: ref.state} for ref in refs]
    for line in render_rows(rows, columns, "table").splitlines():
        click.echo(f"  {line}".rstrip())


@tasks.command("clear")
@click.argument("dag_id", type=NAME)
@click.option("--task-regex", "-t", callback=_regex, help="Only tasks whose id matches (search).")
@click.option("--run-id", type=NAME, help="Only this DAG run [default: every run of the DAG].")
@click.option("--downstream", "-d", is_flag=True, help="Also clear the tasks downstream.")
@click.option("--only-failed", "-f", is_flag=True, help="Only failed and upstream_failed ones.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def clear(
    cli: CliContext,
    dag_id: str,
    task_regex: str | None,
    run_id: str | None,
    downstream: bool,
    only_failed: bool,
    yes: bool,
) -> None:
    """Reset task instances to none so the scheduler runs them again (asks first).

    Queued and running task instances are left alone and listed. Cleared ones lose their
    XComs and get their retries back; their finished DAG runs are queued again.
    """
    from engine import api

    options: dict[str, Any] = {
        "task_regex": task_regex,
        "run_id": run_id,
        "downstream": downstream,
        "only_failed": only_failed,
    }
    if not yes:
        plan = api.clear_task_instances(cli.store, dag_id, dry_run=True, **options)
        if plan.cleared:
            click.echo(f"will clear {len(plan.cleared)} task instance(s) of {dag_id}:")
            _echo_refs(plan.cleared)
        if plan.cleared and plan.left_running:
            click.echo(f"and leave {len(plan.left_running)} alone (queued or running)")
        if plan.cleared:
            confirm_or_refuse(
                f"Clear these {len(plan.cleared)} task instance(s)?",
                f"not confirmed; no task instances of {dag_id} were cleared",
            )
    result = api.clear_task_instances(cli.store, dag_id, actor=cli.actor, **options)
    if result.cleared:
        click.echo(f"cleared {len(result.cleared)} task instance(s) of {dag_id}:")
        _echo_refs(result.cleared, state_label="was")
    else:
        click.echo(f"nothing to clear in {dag_id}")
    if result.requeued_runs:
        click.echo(f"queued again: {', '.join(result.requeued_runs)}")
    if result.left_running:
        click.echo(f"left {len(result.left_running)} alone (queued or running):")
        _echo_refs(result.left_running, reason=True)


@tasks.command("failed-deps")
@click.argument("dag_id", type=NAME)
@click.argument("run_id", type=NAME)
@click.argument("task_id", type=NAME)
@click.option(
    "--map-index", type=NON_NEGATIVE_INT, help="The instance of a mapped task to explain."
)
@output_option
@pass_cli
def failed_deps(
    cli: CliContext, dag_id: str, run_id: str, task_id: str, map_index: int | None, output: str
) -> None:
    """Say why a task instance is not running: upstream, pool, limits, retry, run limit."""
    from engine.cli.explain import render
    from engine.scheduling.explain import explain_task

    found = explain_task(cli.store, cli.config, dag_id, run_id, task_id, map_index)
    result: dict[str, Any] = {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "reason": found.reason,
    }
    if map_index is not None:
        result = {**result, "map_index": map_index}
    # what is in the way (counts, pool holders, upstream states), when there is any
    extra = found.as_dict()
    result.update({k: extra[k] for k in ("details", "upstream", "holders", "runs") if k in extra})
    echo_object(result, output, render(replace(found, scheduler=None)))
