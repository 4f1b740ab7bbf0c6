"""`dagwatch dags failed-deps DAG_ID [RUN_ID]`: why a DAG's next run, or a run, is not
running, in the scheduler's own words (`engine.scheduling.explain`, as `tasks failed-deps`).

Registered on the `dags` group when `engine.cli.dags` is imported.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from engine.cli import CliContext, pass_cli
from engine.cli.dags import dags
from engine.cli.output import echo_object, output_option
from engine.cli.usage import NAME, usage_error
from engine.exceptions import NotFound

#: waiting task instances listed in the table form
SHOWN = 20


@dags.command("failed-deps")
@click.argument("dag_id", type=NAME)
@click.argument("run_id", type=NAME, required=False)
@output_option
@pass_cli
def failed_deps(cli: CliContext, dag_id: str, run_id: str | None, output: str) -> None:
    """Say why a run (or, without RUN_ID, the DAG's next run) is not running: paused,
    max_active_runs (naming the runs in the way), its task instances' limits, no scheduler."""
    from engine.scheduling import explain

    try:
        if run_id is None:
            found = explain.explain_dag(cli.store, cli.config, dag_id)
        else:
            found = explain.explain_run(cli.store, cli.config, dag_id, run_id)
    except NotFound as exc:  # an unknown DAG or run is a usage error: one line, exit 2
        raise usage_error(str(exc)) from None
    result = {"dag_id": dag_id, **({"run_id": run_id} if run_id else {}), **found.as_dict()}
    echo_object(result, output, render(found))


def render(found: Any, *, now: datetime | None = None) -> str:
    """The answer as lines: the reason, the scheduler warning, then what is in the way."""
    from engine.scheduling.explain import duration_text

    now = now or found.held_at or datetime.now(UTC)
    lines = [found.reason]
    if found.scheduler:
        lines.append(f"warning: {found.scheduler}")
    lines.extend(found.details)
    if found.upstream:
        lines.append("upstream: " + ", ".join(f"{t} ({s})" for t, s in found.upstream))
    if found.holders:
        lines.append("holding the pool (longest first):")
        lines.extend(
            f"  {h.dag_id} / {h.run_id} / {h.task_id}"
            + (f"[{h.map_index}]" if h.map_index >= 0 else "")
            + f": {h.state}, {h.pool_slots} slot(s) of {h.pool!r}"
            + (f" for {duration_text((now - h.since).total_seconds())}" if h.since else "")
            + (f" on {h.hostname}" if h.hostname else "")
            for h in found.holders
        )
    if found.waiting:
        lines.append(f"task instances waiting: {len(found.waiting)}")
        lines.extend(
            f"  {w.task_id}" + (f"[{w.map_index}]" if w.map_index >= 0 else "") + f": {w.reason}"
            for w in found.waiting[:SHOWN]
        )
        if len(found.waiting) > SHOWN:
            lines.append(f"  ... and {len(found.waiting) - SHOWN} more (--output json lists all)")
    return "\n".join(lines)
