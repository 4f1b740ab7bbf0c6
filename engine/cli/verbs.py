"""The `dagwatch` verbs, named without importing them: a verb's module loads when it runs.

`dagwatch --help` lists every verb with its one-line help from this table, so that it (and
`dagwatch version`) answer without importing the store, SQLAlchemy or a plugin's heavy
dependencies. A plugin contributes verbs the same way: its `dagwatch.plugins` module
defines `VERBS`, a sequence of `Verb` (or, the older way, `commands()` returning loaded
click commands). A test checks that each entry names its real command and help.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click


@dataclass(frozen=True)
class Verb:
    """One top-level verb: where its click command lives and what `--help` says of it."""

    name: str
    target: str  # "module:attribute" holding the click command or group
    help: str  # the first paragraph of the command's help text
    extends: tuple[str, ...] = ()  # modules that add subcommands to it when imported

    def short_help(self, limit: int) -> str:
        """What click would show for the loaded command, in a `limit`-wide column."""
        return click.Command(self.name, help=self.help).get_short_help_str(limit)

    def load(self) -> click.Command:
        """Import the command (and the modules that extend it)."""
        module, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        for extension in self.extends:
            importlib.import_module(extension)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


BUILTIN_VERBS: tuple[Verb, ...] = (
    Verb("db", "engine.cli.db:db", "Create, upgrade, check and reset the metastore."),
    Verb(
        "dags",
        "engine.cli.dags:dags",
        "List, inspect, parse, test, trigger and backfill DAGs; list their runs.",
        # trigger, pause, backfill...; mark-run; failed-deps
        extends=("engine.cli.runs", "engine.cli.marking", "engine.cli.explain"),
    ),
    Verb(
        "tasks",
        "engine.cli.tasks:tasks",
        "Run and inspect single tasks; list and clear task states.",
    ),
    Verb(
        "variables",
        "engine.cli.variables:variables",
        "Key/value settings for DAGs (values are encrypted in the metastore).",
    ),
    Verb(
        "connections",
        "engine.cli.connections:connections",
        "Where and how DAGs reach external systems (secrets encrypted in the metastore).",
    ),
    Verb(
        "pools",
        "engine.cli.pools:pools",
        "Named slot budgets that limit how many tasks using them run at once.",
    ),
    Verb(
        "config",
        "engine.cli.config:config",
        "Show the effective configuration (defaults < dagwatch.toml < DAGWATCH__ variables).",
    ),
    Verb(
        "metrics",
        "engine.cli.metrics:metrics",
        "Metrics dagwatch emits (StatsD, OpenTelemetry, Prometheus).",
    ),
    Verb("version", "engine.cli.version:version", "Print the dagwatch version."),
    Verb(
        "scheduler",
        "engine.cli.scheduler:scheduler",
        "Run the scheduler: create runs, queue task instances, watch attempts.",
    ),
    Verb(
        "dag-processor",
        "engine.cli.scheduler:dag_processor",
        "Parse the DAG folders every scheduler.min_file_process_interval seconds.",
    ),
    Verb(
        "standalone",
        "engine.cli.scheduler:standalone",
        "Everything on one machine: migrate SQLite, load the examples, run the scheduler"
        " and the console.",
    ),
    Verb(
        "worker",
        "engine.cli.worker:worker",
        "Run a Celery worker: take attempts from the broker and run them"
        " (core.executor = celery). Stop it with SIGTERM: running attempts finish first.",
    ),
)
