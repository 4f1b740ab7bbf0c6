"""`dagwatch pools ...`: list, set and delete pools."""

from __future__ import annotations

import click

from engine.cli import CliContext, pass_cli
from engine.cli.output import echo_rows, output_option
from engine.cli.usage import NAME, NON_NEGATIVE_INT, Group
from engine.store.audit import record_audit
from engine.store.pools import delete_pool, list_pools, set_pool

COLUMNS = ("pool", "slots", "running_slots", "queued_slots", "open_slots", "description")


@click.group(cls=Group)
def pools() -> None:
    """Named slot budgets that limit how many tasks using them run at once."""


@pools.command("list")
@output_option
@pass_cli
def list_(cli: CliContext, output: str) -> None:
    """List pools and how many of their slots are in use."""
    with cli.store.session(readonly=True) as session:
        rows = [pool.as_row() for pool in list_pools(session)]
    echo_rows(rows, COLUMNS, output)


@pools.command("set")
@click.argument("name", type=NAME)
@click.argument("slots", type=NON_NEGATIVE_INT)
@click.argument("description", required=False)
@pass_cli
def set_(cli: CliContext, name: str, slots: int, description: str | None) -> None:
    """Create the pool NAME with SLOTS slots, or change its slots (and description)."""
    with cli.store.session() as session:
        pool = set_pool(session, name, slots, description)
        record_audit(
            session, actor=cli.actor, event="pools.set", extra={"pool": name, "slots": slots}
        )
    click.echo(f"pool {pool.name!r}: {pool.slots} slots, {pool.open_slots} open")


@pools.command()
@click.argument("name", type=NAME)
@pass_cli
def delete(cli: CliContext, name: str) -> None:
    """Delete the pool NAME (default_pool cannot be deleted)."""
    with cli.store.session() as session:
        delete_pool(session, name)
        record_audit(session, actor=cli.actor, event="pools.delete", extra={"pool": name})
    click.echo(f"pool {name!r} deleted")
