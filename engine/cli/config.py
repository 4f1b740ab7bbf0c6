"""`dagwatch config ...`: the effective configuration and where each value comes from."""

from __future__ import annotations

import json

import click

from engine.cli import CliContext, pass_cli
from engine.cli.output import echo_rows, output_option
from engine.cli.usage import Group

COLUMNS = ("section", "key", "value", "source")


@click.group(cls=Group)
def config() -> None:
    """Show the effective configuration (defaults < dagwatch.toml < DAGWATCH__ variables)."""


@config.command("list")
@output_option
@pass_cli
def list_(cli: CliContext, output: str) -> None:
    """Every option, its value (secrets masked) and its source."""
    rows = [
        {
            "section": setting.option.section,
            "key": setting.option.key,
            "value": setting.display_value(),
            "source": setting.source,
        }
        for setting in cli.config.settings.values()
    ]
    echo_rows(rows, COLUMNS, output)


@config.command("get-value")
@click.argument("section")
@click.argument("key")
@click.option(
    "--reveal",
    is_flag=True,
    help="Print a secret value (database URL, Fernet keys, alert routes) in clear, for "
    "scripts that need it; without it, secrets show as ***.",
)
@pass_cli
def get_value(cli: CliContext, section: str, key: str, reveal: bool) -> None:
    """Print the value of SECTION.KEY; secret values masked as in `config list`
    unless --reveal."""
    name = f"{section}.{key}"
    cli.config.get(name)  # an unknown key is an error naming the keys of its section
    setting = cli.config.settings[name]
    if not reveal:
        click.echo(setting.display_value())
    elif isinstance(setting.value, dict | list):
        click.echo(json.dumps(setting.value))  # a table, as scripts can read it
    else:
        click.echo(setting.value)
