"""`dagwatch dags ...`: list, inspect, parse and test DAGs."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from engine.cli import CliContext, pass_cli
from engine.cli.output import echo_object, echo_rows, output_option
from engine.cli.usage import DATETIME, JSON_OBJECT, NAME, Group
from engine.exceptions import DagwatchError, NotFound

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@click.group(cls=Group)
def dags() -> None:
    """List, inspect, parse, test, trigger and backfill DAGs; list their runs."""


@dags.command("list")
@click.option("--include-inactive", is_flag=True, help="Also show DAGs whose file is gone.")
@output_option
@pass_cli
def list_dags(cli: CliContext, include_inactive: bool, output: str) -> None:
    """List the DAGs found in the DAG folders."""
    from engine.sdk.schedules import describe_schedule
    from engine.store import dags as dag_store

    cli.dags_folder()
    with cli.store.session() as session:
        rows = [
            {
                "dag_id": row.dag_id,
                "dag_display_name": row.dag_display_name or row.dag_id,
                "filename": row.fileloc,
                "owner": row.owner,
                "schedule": describe_schedule(row.schedule),
                "is_paused": row.is_paused,
                "is_active": row.is_active,
                "tags": row.tags,
                "tasks": row.task_count,
                "last_parsed": row.last_parsed,
            }
            for row in dag_store.list_dags(session, include_inactive=include_inactive)
        ]
    columns = ["dag_id", "filename", "owner", "schedule", "is_paused", "tags", "tasks"]
    if output != "table" or any(row["dag_display_name"] != row["dag_id"] for row in rows):
        columns.insert(1, "dag_display_name")  # in a table only when a DAG has one
    if include_inactive:
        columns.append("is_active")
    echo_rows(rows, columns if output == "table" else [*columns, "last_parsed"], output)


@dags.command("list-import-errors")
@click.option("--verbose", "-v", is_flag=True, help="Print each file's whole traceback.")
@output_option
@pass_cli
def list_import_errors(cli: CliContext, verbose: bool, output: str) -> None:
    """List DAG files that failed to import, with the error.

    The table shows each file (relative to its DAG folder) and the line of its error
    that says what went wrong, fitted to the terminal; `--verbose` or `--output json`
    give the whole traceback.
    """
    from engine.cli import import_errors
    from engine.parsing.parser import dag_folders
    from engine.store import dags as dag_store

    with cli.store.session() as session:
        rows = [
            {"filename": row.filename, "timestamp": row.timestamp, "error": row.stacktrace}
            for row in dag_store.list_import_errors(session)
        ]
    if output == "json":
        echo_rows(rows, ["filename", "timestamp", "error"], output)
    elif verbose:
        click.echo(import_errors.verbose(rows) if rows else "no import errors")
    else:
        folders = [folder.resolve() for folder in dag_folders(cli.config)]
        click.echo(import_errors.table(rows, folders, import_errors.table_width()))


@dags.command("reserialize")
@click.option("--force", is_flag=True, help="Re-import unchanged files too.")
@output_option
@pass_cli
def reserialize(cli: CliContext, force: bool, output: str) -> None:
    """Parse the DAG folders now and store what was found.

    The DAG, file and import error counts are those on record after the pass (files
    skipped as unchanged count with what they held); bad entries of the folders are
    logged with their path.
    """
    from engine.parsing.dag_processor import log_new_problems
    from engine.parsing.parser import process_folders

    cli.dags_folder()
    report = process_folders(cli.store, cli.config, force=force)
    log_new_problems(report.problems, set())
    totals = report.totals
    summary = {
        "files_seen": report.files_seen,
        "files_parsed": report.files_parsed,
        "dags_found": report.dags_found,
        "dags": totals.dags,
        "dag_files": totals.files,
        "import_errors": totals.import_errors,
        "duration_seconds": round(report.duration, 3),
    }
    text = (
        f"{report.files_seen} files, {report.files_parsed} parsed in {report.duration:.2f} s; "
        f"on record: {totals.dags} DAGs from {totals.files} files, "
        f"{totals.import_errors} import errors"
    )
    echo_object(summary, output, text)


@dags.command("show")
@click.argument("dag_id", type=NAME)
@output_option
@pass_cli
def show(cli: CliContext, dag_id: str, output: str) -> None:
    """Show a DAG's tasks and edges."""
    from engine.parsing.serialization import SerializedDAG
    from engine.sdk.schedules import describe_schedule
    from engine.store import dags as dag_store

    with cli.store.session() as session:
        plan = SerializedDAG.from_dict(dag_store.get_dag(session, dag_id).serialized)
    tasks: list[dict[str, Any]] = [
        {
            "task_id": task.task_id,
            "operator": task.operator,
            "trigger_rule": str(task.trigger_rule),
            "upstream": sorted(task.upstream_task_ids),
            "downstream": sorted(task.downstream_task_ids),
        }
        for task in plan.topological_sort()
    ]
    if output == "json":
        echo_rows(tasks, ["task_id", "operator", "trigger_rule", "upstream", "downstream"], output)
        return
    click.echo(f"DAG {plan.dag_id}  schedule: {describe_schedule(plan.timetable.summary)}")
    for task in tasks:
        click.echo(f"  {task['task_id']}  [{task['operator']}, {task['trigger_rule']}]")
        for downstream in task["downstream"]:
            label = plan.edge_info(task["task_id"], downstream).get("label")
            click.echo(f"    -> {downstream}" + (f"  ({label})" if label else ""))


def load_dag(cli: CliContext, dag_id: str) -> Any:
    """Parse the folders (unchanged files are skipped), then import the DAG's file here."""
    from engine.parsing.parser import dag_folders, import_dag_file, process_folders
    from engine.store import dags as dag_store

    cli.dags_folder()
    process_folders(cli.store, cli.config)
    with cli.store.session() as session:
        try:
            fileloc = dag_store.get_dag(session, dag_id).fileloc
        except NotFound as exc:
            _raise_import_error(session, dag_id, exc)
    for folder in dag_folders(cli.config):
        if folder.is_dir() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    for dag in import_dag_file(Path(fileloc)):
        if dag.dag_id == dag_id:
            return dag
    raise NotFound(f"DAG {dag_id!r} is no longer defined in {fileloc}")


def _raise_import_error(session: Session, dag_id: str, not_found: NotFound) -> None:
    """Raise the import error of the file that should define `dag_id`, if there is one."""
    from engine.cli import import_errors

    found = import_errors.error_for_dag(session, dag_id)
    if found is None:
        raise not_found
    filename, stacktrace = found
    raise DagwatchError(
        f"DAG {dag_id!r} not found: its file {filename} failed to import:\n"
        f"{import_errors.tail(stacktrace)}\n"
        "(the whole traceback: dagwatch dags list-import-errors --verbose)"
    )


@dags.command("test")
@click.argument("dag_id", type=NAME)
@click.option("--logical-date", type=DATETIME, help="Logical date of the run [default: now].")
@click.option("--conf", type=JSON_OBJECT, help="Run conf as a JSON object (overrides params).")
@pass_cli
def test(cli: CliContext, dag_id: str, logical_date: datetime | None, conf: dict | None) -> None:
    """Run one DAG run in this process, one task at a time, and print each outcome.

    States, attempts and logs are written to the metastore and the log folder. Exits
    with 1 when the run fails.
    """
    from engine.execution.dag_test import run_dag_in_process
    from engine.states import DagRunState

    dag = load_dag(cli, dag_id)
    when = logical_date or datetime.now(UTC).replace(microsecond=0)
    report = run_dag_in_process(
        cli.store, cli.config, dag, logical_date=when, conf=conf, echo=click.echo
    )
    if report.state is not DagRunState.SUCCESS:
        raise DagwatchError(f"run {report.run_id} of {dag_id} {report.state}")


@dags.command("migrate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--write", is_flag=True, help="Rewrite the files in place instead of printing a diff."
)
def migrate(paths: tuple[Path, ...], write: bool) -> None:
    """Rewrite the Airflow imports of DAG files and plugin modules to dagwatch's.

    PATHS are files or folders (their `.py` files). Prints a unified diff, or with
    `--write` rewrites the files; comments and formatting are kept. Imports dagwatch
    cannot map are listed on stderr with their line, and make the exit code 1.
    """
    from engine.parsing.airflow_migrate import migrate_file, python_files

    problems = 0
    changed = 0
    for path in python_files(paths):
        result = migrate_file(path)
        if result.error:
            click.echo(f"{path}: {result.error}", err=True)
            problems += 1
            continue
        if result.changed:
            changed += 1
            if write:
                path.write_text(result.after, encoding="utf-8")
                click.echo(f"rewrote {path}")
            else:
                click.echo(result.diff(), nl=False)
        for item in result.unmapped:
            click.echo(str(item), err=True)
            problems += 1
    verb = "rewritten" if write else "to rewrite"
    click.echo(f"{changed} file(s) {verb}; {problems} import(s) or file(s) not mapped", err=True)
    if problems:
        sys.exit(1)
