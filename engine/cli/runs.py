"""`dagwatch dags ...` verbs for runs: trigger, pause, unpause, backfill, list-runs, state.

Registered on the `dags` group when `engine.cli.dags` is imported. The verbs stay thin:
every check and write is in `engine.api`, shared with the console.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from engine.cli import CliContext, pass_cli
from engine.cli.dags import dags
from engine.cli.output import echo_object, echo_rows, output_option
from engine.cli.usage import (
    DATETIME,
    JSON_OBJECT,
    NAME,
    POSITIVE_INT,
    check_year,
    usage_error,
)
from engine.exceptions import DagwatchError
from engine.states import DagRunState

#: A backfill queuing more runs than this asks first (unless --yes).
CONFIRM_ABOVE = 50
RUN_COLUMNS = ["dag_id", "run_id", "run_type", "state", "logical_date", "start_date", "end_date"]


class WallClockParam(click.ParamType):
    """An ISO 8601 date or datetime; without an offset it stays naive (the DAG's timezone)."""

    name = "datetime"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        import pendulum  # only when a verb parses a date

        try:
            parsed = pendulum.parse(value, tz=None)
        except (ValueError, pendulum.parsing.exceptions.ParserError):
            self.fail(f"{value!r} is not an ISO 8601 date or datetime", param, ctx)
        if not isinstance(parsed, datetime):
            self.fail(f"{value!r} is not a date or datetime", param, ctx)
        check_year(self, parsed, param, ctx)
        if parsed.tzinfo is None:
            return datetime(*parsed.timetuple()[:6], parsed.microsecond)
        return parsed.in_timezone("UTC")


WALL_CLOCK = WallClockParam()


def confirm_or_refuse(question: str, refusal: str) -> None:
    """Ask `question`; no answer (closed stdin, no terminal) or "no" raises `refusal`."""
    try:
        confirmed = click.confirm(question)
    except click.Abort:  # no answer: end the prompt's line before refusing
        click.echo()
        confirmed = False
    if not confirmed:
        raise DagwatchError(f"{refusal} (pass --yes to skip the question)")


def _run_row(run: Any) -> dict[str, Any]:
    return {
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "run_type": run.run_type,
        "state": run.state,
        "logical_date": run.logical_date,
        "data_interval_start": run.data_interval_start,
        "data_interval_end": run.data_interval_end,
        "start_date": run.start_date,
        "end_date": run.end_date,
    }


def _note_if_paused(cli: CliContext, dag_id: str) -> None:
    from engine.store import dags as dag_store

    with cli.store.session(readonly=True) as session:
        paused = dag_store.get_dag(session, dag_id).is_paused
    if paused:
        click.echo(
            f"note: DAG {dag_id} is paused; its queued runs start once it is unpaused", err=True
        )


@dags.command("trigger")
@click.argument("dag_id", type=NAME)
@click.option("--conf", type=JSON_OBJECT, help="Run conf as a JSON object (checked by params).")
@click.option("--logical-date", type=DATETIME, help="Logical date of the run [default: now].")
@click.option("--run-id", type=NAME, help="Run id [default: manual__<logical date>].")
@output_option
@pass_cli
def trigger(
    cli: CliContext,
    dag_id: str,
    conf: dict | None,
    logical_date: datetime | None,
    run_id: str | None,
    output: str,
) -> None:
    """Queue a manual run; the scheduler starts it. Prints the run id."""
    from engine import api

    run = api.trigger_dag(
        cli.store, dag_id, conf=conf, logical_date=logical_date, run_id=run_id, actor=cli.actor
    )
    result = {
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "logical_date": run.logical_date,
        "state": run.state,
    }
    echo_object(result, output, run.run_id)
    _note_if_paused(cli, dag_id)


def _pause(cli: CliContext, dag_id: str, paused: bool) -> None:
    from engine import api

    api.set_paused(cli.store, dag_id, paused, actor=cli.actor)
    click.echo(f"DAG {dag_id} {'paused' if paused else 'unpaused'}")


@dags.command("pause")
@click.argument("dag_id", type=NAME)
@pass_cli
def pause(cli: CliContext, dag_id: str) -> None:
    """Stop the scheduler from creating and starting runs of a DAG."""
    _pause(cli, dag_id, True)


@dags.command("unpause")
@click.argument("dag_id", type=NAME)
@pass_cli
def unpause(cli: CliContext, dag_id: str) -> None:
    """Let the scheduler run a DAG again (its next run is computed from now)."""
    _pause(cli, dag_id, False)


@dags.command("backfill")
@click.argument("dag_id", type=NAME)
@click.option("--start", "-s", type=WALL_CLOCK, required=True, help="First logical date.")
@click.option("--end", "-e", type=WALL_CLOCK, required=True, help="Last logical date.")
@click.option("--conf", type=JSON_OBJECT, help="Run conf as a JSON object (checked by params).")
@click.option("--rerun-failed", is_flag=True, help="Clear and queue again failed runs in range.")
@click.option("--yes", "-y", is_flag=True, help=f"Do not ask, even for over {CONFIRM_ABOVE} runs.")
@output_option
@pass_cli
def backfill(
    cli: CliContext,
    dag_id: str,
    start: datetime,
    end: datetime,
    conf: dict | None,
    rerun_failed: bool,
    yes: bool,
    output: str,
) -> None:
    """Queue a run for every schedule interval with a logical date in [START, END].

    Dates without an offset are in the DAG's timezone. Dates that already have a run
    are skipped (failed ones are re-run with --rerun-failed). The scheduler starts the
    runs within the DAG's max_active_runs.
    """
    from engine import api

    naive = start.tzinfo is None, end.tzinfo is None
    if naive[0] == naive[1] and start > end:
        raise usage_error(f"--start {start.isoformat()} is after --end {end.isoformat()}")
    options: dict[str, Any] = {
        "start": start,
        "end": end,
        "conf": conf,
        "rerun_failed": rerun_failed,
    }
    if not yes:
        planned = api.backfill(cli.store, dag_id, dry_run=True, **options)
        if len(planned) > CONFIRM_ABOVE:
            confirm_or_refuse(
                f"Queue {len(planned)} runs of {dag_id}?",
                f"not confirmed; no runs of {dag_id} were queued",
            )
    queued = api.backfill(cli.store, dag_id, actor=cli.actor, **options)
    columns = ["dag_id", "run_id", "logical_date", "data_interval_end", "state"]
    if output == "json":
        echo_rows([_run_row(run) for run in queued], columns, output)
    elif not queued:
        click.echo(f"nothing to backfill: every date in range already has a run of {dag_id}")
    else:
        echo_rows([_run_row(run) for run in queued], columns, output)
        click.echo(f"queued {len(queued)} run(s) of {dag_id}")
    if queued:
        _note_if_paused(cli, dag_id)


@dags.command("list-runs")
@click.argument("dag_id", type=NAME, required=False)
@click.option("--state", type=click.Choice([state.value for state in DagRunState]))
@click.option("--limit", type=POSITIVE_INT, default=100, show_default=True)
@output_option
@pass_cli
def list_runs(
    cli: CliContext, dag_id: str | None, state: str | None, limit: int, output: str
) -> None:
    """List DAG runs, newest logical date first."""
    from engine import api

    found = api.list_runs(cli.store, dag_id=dag_id, state=state, limit=limit)
    echo_rows([_run_row(run) for run in found], RUN_COLUMNS, output)


@dags.command("state")
@click.argument("dag_id", type=NAME)
@click.argument("run_id", type=NAME)
@output_option
@pass_cli
def state(cli: CliContext, dag_id: str, run_id: str, output: str) -> None:
    """Print the state of one DAG run."""
    from engine import api

    run_state = api.dag_run_state(cli.store, dag_id, run_id)
    echo_object({"dag_id": dag_id, "run_id": run_id, "state": run_state.value}, output, run_state)
