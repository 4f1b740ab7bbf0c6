"""`dagwatch console` (serve the Streamlit app) and `dagwatch users` (who may log in)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from console import settings as console_settings
from engine.cli import CliContext, pass_cli
from engine.cli.output import echo_rows, output_option

#: the Streamlit app and the session routes (console/server.py serves app.py)
APP = Path(__file__).with_name("server.py")


def streamlit_command(host: str, port: int) -> list[str]:
    """The `streamlit run` command line: headless, no telemetry, no file watching."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--server.runOnSave",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "minimal",
        "--theme.base",
        "light",
        # Streamlit runs a full gc.collect() after every script run, holding the GIL while
        # the session's messages wait to be sent: on a busy machine that was most of a new
        # tab's server time (docs/dev/0011-console-new-tab.md). Python's own collector still runs.
        "--runner.postScriptGC",
        "false",
    ]


@click.command("console")
@click.option("--host", help="Address to listen on (default: console.host).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: console.port).")
@pass_cli
def console(cli: CliContext, host: str | None, port: int | None) -> None:
    """Serve the operations console (Streamlit) until stopped."""
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["console__host"] = host
    if port is not None:
        overrides["console__port"] = port
    config = cli.config.with_overrides(**overrides)
    chosen = console_settings.ConsoleSettings.from_config(config)
    chosen.check_bind()
    env = dict(os.environ)
    # the app reads its configuration itself: hand it the flags as configuration
    env["DAGWATCH__CONSOLE__HOST"] = chosen.host
    env["DAGWATCH__CONSOLE__PORT"] = str(chosen.port)
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    click.echo(f"console: {chosen.url}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    command = streamlit_command(chosen.host, chosen.port)
    os.execve(command[0], command, env)  # Streamlit takes over this process (and its signals)


@click.group("users")
def users() -> None:
    """Console users and their roles (viewer, operator, admin)."""


def _read_password(prompt: bool) -> str:
    if prompt:
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


@users.command("create")
@click.option("--username", required=True, help="The login name (for OIDC, the e-mail).")
@click.option(
    "--role",
    required=True,
    type=click.Choice(console_settings.ROLES),
    help="viewer reads; operator also acts on DAGs and runs; admin also manages pools.",
)
@click.option("--no-password", is_flag=True, help="An OIDC user: no password of its own.")
@pass_cli
def create(cli: CliContext, username: str, role: str, no_password: bool) -> None:
    """Add a user; the password is prompted for, or read from standard input."""
    from console import users as console_users

    password = None if no_password else _read_password(sys.stdin.isatty())
    if password is not None and not password:
        raise click.UsageError("the password is empty")
    console_users.create_user(cli.store, username, role, password, actor=cli.actor)
    click.echo(f"created user {username} ({role})")


@users.command("list")
@output_option
@pass_cli
def list_(cli: CliContext, output: str) -> None:
    """The users and their roles (never their passwords)."""
    from console import users as console_users

    echo_rows(
        console_users.list_users(cli.store),
        ("username", "role", "created_at", "last_login"),
        output,
    )


@users.command("delete")
@click.argument("username")
@pass_cli
def delete(cli: CliContext, username: str) -> None:
    """Remove a user."""
    from console import users as console_users

    console_users.delete_user(cli.store, username, actor=cli.actor)
    click.echo(f"deleted user {username}")
