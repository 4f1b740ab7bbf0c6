"""`dagwatch dags mark-run`: mark one run success or failed, as the console's Mark does.

Registered on the `dags` group when imported (by `engine.cli`). It shows what it will
change and asks first (unless --yes); the change and its audit row go through
`engine.api.mark_run`, the same call the console makes.
"""

from __future__ import annotations

from collections import Counter

import click

from engine.cli import CliContext, pass_cli
from engine.cli.dags import dags
from engine.cli.output import echo_object, output_option
from engine.cli.runs import confirm_or_refuse
from engine.cli.usage import NAME, usage_error

#: the states a run can be marked with
MARK_STATES = ("success", "failed")


def _moves(changed: list) -> str:
    counts = Counter(f"{ref.state} -> {to}" for ref, to in changed)
    return ", ".join(f"{n} {move}" for move, n in sorted(counts.items())) or "none"


@dags.command("mark-run")
@click.argument("dag_id", type=NAME)
@click.argument("run_id", type=NAME)
@click.option(
    "--state", "target", type=click.Choice(MARK_STATES), help="The run's new state (required)."
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@output_option
@pass_cli
def mark_run(
    cli: CliContext, dag_id: str, run_id: str, target: str, yes: bool, output: str
) -> None:
    """Mark a DAG run success or failed (shows what it changes and asks first).

    Success makes its unfinished task instances successes (queued and running ones are
    left to finish); failed fails the executing ones and skips those that have not run.
    """
    from engine import api

    if target is None:
        raise usage_error("give the run's new state: --state success or --state failed")
    if not yes:
        plan = api.mark_run(cli.store, dag_id, run_id, target, dry_run=True)
        if plan.run_state == target:
            click.echo(f"run {run_id} of {dag_id} is already {target}")
            return
        click.echo(
            f"will mark run {run_id} of {dag_id} {target} (now {plan.run_state}) and move "
            f"{len(plan.changed)} task instance(s): {_moves(plan.changed)}"
        )
        if plan.changed:
            from engine.cli.tasks import _echo_refs  # the `tasks` verbs: not for `dags ...`

            _echo_refs([ref for ref, _to in plan.changed])
        if plan.left_running:
            click.echo(f"and leave {len(plan.left_running)} alone (queued or running)")
        confirm_or_refuse(
            f"Mark run {run_id} {target}?", f"not confirmed; run {run_id} of {dag_id} is unchanged"
        )
    result = api.mark_run(cli.store, dag_id, run_id, target, actor=cli.actor)
    summary = {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": target,
        "previous_state": result.run_state,
        "task_instances_moved": 0 if result.run_state == target else len(result.changed),
        "left_running": len(result.left_running),
    }
    if result.run_state == target:
        text = f"run {run_id} of {dag_id} is already {target}"
    else:
        text = (
            f"marked run {run_id} of {dag_id} {target} (was {result.run_state}); "
            f"{len(result.changed)} task instance(s) moved: {_moves(result.changed)}"
        )
    echo_object(summary, output, text)
