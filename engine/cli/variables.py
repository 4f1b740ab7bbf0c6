"""`dagwatch variables ...`: get, set, list and delete variables."""

from __future__ import annotations

import click

from engine.cli import CliContext, pass_cli
from engine.cli.output import echo_rows, output_option
from engine.cli.usage import NAME, Group, parse_json, usage_error
from engine.config import MASK
from engine.exceptions import NotFound
from engine.secrets import is_sensitive_key
from engine.store.audit import record_audit
from engine.store.variables import delete_variable, get_variable, list_variables, set_variable

COLUMNS = ("key", "value", "is_secret", "description")
_NO_DEFAULT = object()


@click.group(cls=Group)
def variables() -> None:
    """Key/value settings for DAGs (values are encrypted in the metastore)."""


@variables.command()
@click.argument("key", type=NAME)
@click.option("--default", "default", default=None, help="Print this when KEY does not exist.")
@click.option(
    "--reveal", is_flag=True, help="Print a secret variable's value in clear (it shows as ***)."
)
@pass_cli
def get(cli: CliContext, key: str, default: str | None, reveal: bool) -> None:
    """Print the value of KEY (from the secrets backends, then the metastore); a secret one
    as *** unless --reveal."""
    from engine.secrets_backends import find_variable

    value, is_secret, _ = find_variable(cli.config, key)
    if value is not None:
        click.echo(MASK if is_secret and not reveal else value)
        return
    with cli.store.session(readonly=True) as session:
        record = get_variable(session, key, config=cli.config)
    if record is None:
        if default is None:
            raise NotFound(f"variable {key!r} does not exist")
        click.echo(default)
        return
    click.echo(MASK if record.is_secret and not reveal else record.value)


@variables.command("set")
@click.argument("key", type=NAME)
@click.argument("value")
@click.option("--description", default=None, help="What the variable is for.")
@click.option(
    "--secret/--no-secret",
    default=None,
    help="Mask the value in listings and logs [default: when KEY looks sensitive].",
)
@click.option("--json", "is_json", is_flag=True, help="VALUE is JSON: check it is valid.")
@pass_cli
def set_(
    cli: CliContext,
    key: str,
    value: str,
    description: str | None,
    secret: bool | None,
    is_json: bool,
) -> None:
    """Create or replace the variable KEY."""
    if is_json:
        try:
            parse_json(value)
        except ValueError as exc:
            raise usage_error(f"VALUE is not valid JSON: {exc}") from None
    is_secret = is_sensitive_key(key) if secret is None else secret
    with cli.store.session() as session:
        set_variable(
            session, key, value, description=description, is_secret=is_secret, config=cli.config
        )
        record_audit(
            session, actor=cli.actor, event="variables.set", extra={"key": key, "secret": is_secret}
        )
    click.echo(f"variable {key!r} set" + (" (secret)" if is_secret else ""))


@variables.command("list")
@output_option
@pass_cli
def list_(cli: CliContext, output: str) -> None:
    """List variables; values of secret variables show as ***."""
    with cli.store.session(readonly=True) as session:
        records = list_variables(session, config=cli.config)
    echo_rows([record.as_row(masked=True) for record in records], COLUMNS, output)


@variables.command()
@click.argument("key", type=NAME)
@pass_cli
def delete(cli: CliContext, key: str) -> None:
    """Delete the variable KEY."""
    with cli.store.session() as session:
        if not delete_variable(session, key):
            raise NotFound(f"variable {key!r} does not exist")
        record_audit(session, actor=cli.actor, event="variables.delete", extra={"key": key})
    click.echo(f"variable {key!r} deleted")
