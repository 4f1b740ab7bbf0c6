"""The `dagwatch` command: one entry point, Airflow-shaped verb groups.

Each verb group lives in its own module, named in `engine.cli.verbs` and imported only
when it runs, so that `dagwatch version` and `--help` answer at once. Errors that
dagwatch raises on purpose (`DagwatchError`) become one line on stderr and exit code 1.
Bad usage exits with 2 (click's convention), before anything is written: a bad argument
(whatever command, a plugin's too, declares it) and a configuration value that is not
allowed (`ConfigError`) are one line on stderr, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from engine import hooks
from engine.cli.usage import Group, one_line
from engine.cli.verbs import BUILTIN_VERBS, Verb
from engine.config import OPTIONS, Config, checked_dags_folder, load_config
from engine.exceptions import ConfigError, DagwatchError
from engine.masking import install_log_redaction, redact

if TYPE_CHECKING:
    from engine.store.db import Store


class CliContext:
    """What every verb needs, loaded lazily so `--help` and bad usage touch nothing."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)

    @cached_property
    def config(self) -> Config:
        config = load_config(self._environ)
        from engine import runtime

        runtime.configure(config, environ=self._environ)
        return config

    @cached_property
    def store(self) -> Store:
        from engine import runtime

        self.config  # noqa: B018 - configures the runtime first
        return runtime.get_store()

    @property
    def actor(self) -> str:
        return self._environ.get("USER") or "cli"

    def dags_folder(self) -> Path:
        """`core.dags_folder`, checked: verbs that scan or import DAG files call this first."""
        return checked_dags_folder(self.config)


pass_cli = click.make_pass_decorator(CliContext, ensure=True)


_BUILTIN_NAMES = frozenset(verb.name for verb in BUILTIN_VERBS)


class _Main(Group):
    """The root group. Its verbs are imported only when one runs: `--help` lists them from
    `engine.cli.verbs`. The verbs of installed plugins join on first lookup, so that a
    plugin's CLI module may import this package without a cycle."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._verbs: dict[str, Verb] = {verb.name: verb for verb in BUILTIN_VERBS}
        self._plugins_loaded = False

    def _load_plugin_commands(self) -> None:
        if not self._plugins_loaded:
            self._plugins_loaded = True
            for verb in hooks.cli_verbs():  # `alerts`, `sla`...
                if isinstance(verb, Verb):
                    self._verbs[verb.name] = verb
                    self.commands.pop(verb.name, None)
                else:
                    self._verbs.pop(verb.name, None)
                    self.add_command(verb)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _BUILTIN_NAMES:  # plugins add verbs; they do not replace ours
            self._load_plugin_commands()
        verb = self._verbs.pop(cmd_name, None)
        if verb is not None:
            self.add_command(verb.load(), cmd_name)
        command = super().get_command(ctx, cmd_name)
        if command is None:  # a typo: click suggests from the loaded verbs, so load them all
            for name in list(self._verbs):
                self.add_command(self._verbs.pop(name).load(), name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return sorted({*self.commands, *self._verbs})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's listing, with the help of verbs not imported yet taken from their table."""
        rows: list[tuple[str, Verb | click.Command]] = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is None:
                rows.append((name, self._verbs[name]))
            elif not command.hidden:
                rows.append((name, command))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl(
                    [
                        (
                            name,
                            item.short_help(limit)
                            if isinstance(item, Verb)
                            else item.get_short_help_str(limit),
                        )
                        for name, item in rows
                    ]
                )

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # from a command that is not a `usage.Command`
            raise one_line(exc.ctx or ctx, exc) from None
        except ConfigError as exc:  # a value that is not allowed: a usage error
            click.echo(f"error: {redact(str(exc))}", err=True)
            sys.exit(2)
        except DagwatchError as exc:
            click.echo(f"error: {redact(str(exc))}", err=True)
            sys.exit(1)


def _log_level(environ: dict[str, str]) -> str:
    """DAGWATCH__LOGGING__LEVEL if it is allowed, else WARNING: a bad value is reported by
    the configuration, as one line, when a verb loads it."""
    (option,) = (option for option in OPTIONS if option.name == "logging.level")
    raw = environ.get("DAGWATCH__LOGGING__LEVEL", "WARNING")
    try:
        return str(option.parse(raw, "DAGWATCH__LOGGING__LEVEL"))
    except ConfigError:
        return "WARNING"


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """dagwatch: DAGs in Python, observable and alertable out of the box."""
    ctx.ensure_object(CliContext)
    logging.basicConfig(
        level=_log_level(dict(os.environ)),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_log_redaction()  # every process the CLI starts logs with secrets masked


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="dagwatch")
