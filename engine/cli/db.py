"""`dagwatch db ...`: create or upgrade, check, reset the metastore, and rotate its key.

Alembic is imported inside the verbs that need it: it costs a third of a second at startup.
"""

from __future__ import annotations

import click

from engine.cli import CliContext, pass_cli
from engine.cli.usage import Group
from engine.exceptions import DagwatchError
from engine.secrets import rotate_fernet_key
from engine.store.audit import record_audit
from engine.store.db import mask_url


@click.group(cls=Group)
def db() -> None:
    """Create, upgrade, check and reset the metastore."""


def _audit(cli: CliContext, event: str, **extra: object) -> None:
    with cli.store.session() as session:
        record_audit(session, actor=cli.actor, event=event, extra=extra)


@db.command()
@pass_cli
def migrate(cli: CliContext) -> None:
    """Create the schema, or upgrade it to this version's (safe to run again)."""
    from engine.store import migrate as migrations

    revision = migrations.migrate(cli.store, cli.config.get("core.default_pool_slots"))
    _audit(cli, "db.migrate", revision=revision)
    click.echo(f"metastore {cli.store.display_url} is at revision {revision}")


@db.command()
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def reset(cli: CliContext, yes: bool) -> None:
    """Drop every table and recreate the schema: all runs, variables and connections go."""
    from engine.store import migrate as migrations

    url = mask_url(cli.config.get("database.sql_alchemy_conn"))
    if not yes:
        try:
            confirmed = click.confirm(f"Drop all data in {url} and recreate the schema?")
        except click.Abort:  # no terminal, or stdin closed: never reset by default
            confirmed = False
        if not confirmed:
            raise DagwatchError(
                f"not confirmed; {url} is unchanged (pass --yes to skip the question)"
            )
    revision = migrations.reset(cli.store, cli.config.get("core.default_pool_slots"))
    _audit(cli, "db.reset", revision=revision)
    click.echo(f"metastore {url} was reset; it is at revision {revision}")


@db.command()
@pass_cli
def check(cli: CliContext) -> None:
    """Exit 1 and list the problems if the metastore is unreachable, not migrated or drifted."""
    from engine.store import migrate as migrations

    problems = migrations.check(cli.store)
    if problems:
        for problem in problems:
            click.echo(f"problem: {problem}", err=True)
        raise DagwatchError(
            f"{len(problems)} problem(s) with the metastore {cli.store.display_url}"
        )
    click.echo(f"ok: {cli.store.display_url} is at revision {migrations.head_revision()}")


@db.command("rotate-fernet-key")
@pass_cli
def rotate_fernet_key_command(cli: CliContext) -> None:
    """Re-encrypt variables and connections with the first key of core.fernet_key."""
    count = rotate_fernet_key(cli.store, cli.config)
    _audit(cli, "db.rotate_fernet_key", rows=count)
    click.echo(f"re-encrypted {count} variable(s) and connection(s) with the first key")
