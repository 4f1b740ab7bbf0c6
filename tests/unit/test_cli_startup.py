"""`dagwatch version` and `--help` import no heavy module; the verb table matches the verbs.

The CLI answers at once because each verb's module is imported only when it runs. These
tests guard that by what is imported, never by timing."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import click.testing
import pytest

from engine import hooks
from engine.cli import cli
from engine.cli.verbs import BUILTIN_VERBS, Verb
from tests.helpers import run_cli

# libraries that no quick verb needs: migrations, the plugins' dependencies, the executors'
# brokers, templating, schedules, the cipher, the PostgreSQL driver, HTTP clients
LIBRARIES = (
    "alembic",
    "pandas",
    "streamlit",
    "celery",
    "kombu",
    "redis",
    "libcst",
    "apprise",
    "opentelemetry",
    "prometheus_client",
    "jinja2",
    "croniter",
    "cryptography",
    "psycopg",
    "httpx",
    "requests",
)
# what `dagwatch version` and `dagwatch --help` must not import (the store, the plugins'
# dependencies, the executors, the templating and date libraries)
HEAVY = (
    *LIBRARIES,
    "sqlalchemy",
    "pendulum",
    "importlib.metadata",
    "engine.store",
    "engine.sdk.dag",
    "engine.sdk.tasks",
    "engine.scheduling.scheduler",
    "alerts.cli",
    "alerts.sla",
    "console.cli",
    "engine.cli.reference",
)

_PROBE = """
import json, sys
sys.argv = ["dagwatch", *json.loads(sys.argv[1])]
from engine.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _modules_after(args: list[str], env: dict[str, str]) -> tuple[str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), done.stderr
    return done.stdout, set(report["modules"])


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize(
    ("args", "expected", "allowed"),
    [
        (["version"], "0.1.0", set()),
        # listing the plugins' verbs reads the installed entry points, nothing more
        (["--help"], "Commands:", {"importlib.metadata"}),
        (["-h"], "version", {"importlib.metadata"}),
    ],
)
def test_quick_verbs_import_nothing_heavy(
    args: list[str], expected: str, allowed: set[str], cli_env: dict[str, str]
) -> None:
    stdout, modules = _modules_after(args, cli_env)
    assert expected in stdout
    assert [
        m for m in _heavy(modules) if m.rsplit(".", 1)[0] not in allowed and m not in allowed
    ] == []


def test_a_verb_imports_what_it_needs_when_it_runs(cli_env: dict[str, str]) -> None:
    """`dags` imports its modules (and the modules adding its verbs), and its `--help` still
    nothing heavy: the date library loads when a date is parsed, the `tasks` verbs when
    one runs."""
    stdout, modules = _modules_after(["dags", "--help"], cli_env)
    assert "trigger" in stdout and "mark-run" in stdout and "failed-deps" in stdout
    assert {"engine.cli.dags", "engine.cli.runs", "engine.cli.marking"} <= modules
    assert "engine.cli.tasks" not in modules
    assert _heavy(modules) == []


# what `dagwatch dags trigger` must not import: it reads one DAG row and writes a run, its
# task instances and an audit row (SQLAlchemy, the models, the plugins' listeners), so no
# migrations, no DAG structure rebuilt, no scheduler, executor, SLA check, console or
# delivery code, no cipher (nothing is encrypted)
TRIGGER_HEAVY = (
    *LIBRARIES,
    "sqlalchemy.dialects.postgresql",
    "engine.parsing",
    "engine.scheduling",
    "engine.execution.runner",
    "engine.execution.local",
    "engine.execution.celery",
    "engine.execution.sequential",
    "engine.sdk.dag",
    "engine.sdk.tasks",
    "engine.sdk.connections",
    "engine.cli.tasks",
    "alerts.sla",
    "alerts.forecast",
    "alerts.dispatcher",
    "alerts.delivery",
    "alerts.incidents",
    "alerts.overdue",
    "alerts.cli",
    "console.cli",
    "console.rollup",
    "console.queries",
)

TRIGGERED_DAG = """
from datetime import datetime

from engine import DAG, EmptyOperator, Param

with DAG(
    "guarded",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    params={"n": Param(1, type="integer")},
):
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")
"""


@pytest.fixture(scope="module")
def trigger_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A migrated SQLite home holding one parsed DAG, with the alerts plugin on."""
    home = tmp_path_factory.mktemp("trigger_home")
    (home / "dags").mkdir()
    (home / "dags" / "guarded.py").write_text(TRIGGERED_DAG)
    env = {
        "DAGWATCH_HOME": str(home),
        "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        "DAGWATCH__ALERTS__ENABLED": "true",
        "PATH": "/usr/bin:/bin",
        "USER": "dagwatch-test",
    }
    for args in (["db", "migrate"], ["dags", "reserialize"]):
        done = run_cli(*args, env=env)
        assert done.returncode == 0, done.stderr
    return env


def _modules_of(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_dags_trigger_imports_only_what_a_trigger_needs(trigger_env: dict[str, str]) -> None:
    stdout, modules = _modules_after(
        ["dags", "trigger", "guarded", "--conf", '{"n": 2}', "--output", "json"], trigger_env
    )
    run = json.loads(stdout)
    assert run["dag_id"] == "guarded" and run["state"] == "queued"
    # the guard can fail: the trigger did import the metastore and the alerts' listener
    assert {"sqlalchemy", "engine.store.models", "alerts.listener"} <= modules
    assert _modules_of(modules, TRIGGER_HEAVY) == []


def _all_verbs() -> list[Verb]:
    plugin_verbs = [verb for verb in hooks.cli_verbs() if isinstance(verb, Verb)]
    return [*BUILTIN_VERBS, *plugin_verbs]


def test_plugins_declare_their_verbs_lazily() -> None:
    names = {verb.name for verb in hooks.cli_verbs() if isinstance(verb, Verb)}
    assert {"alerts", "sla", "console", "users"} <= names


@pytest.mark.parametrize("verb", _all_verbs(), ids=lambda verb: verb.name)
def test_the_verb_table_matches_the_real_command(verb: Verb) -> None:
    command = verb.load()
    assert command.name == verb.name
    assert not command.hidden
    for limit in range(10, 160, 7):  # the column `--help` gives depends on the terminal
        assert verb.short_help(limit) == command.get_short_help_str(limit), limit


def test_help_lists_every_verb_with_its_real_help() -> None:
    """`--help` from the table equals click's own listing of the imported commands."""
    lazy = click.testing.CliRunner().invoke(cli, ["--help"], terminal_width=100).output
    loaded = click.Group(name=cli.name, help=cli.help)
    for verb in _all_verbs():
        loaded.add_command(verb.load(), verb.name)
    loaded.context_settings = cli.context_settings
    eager = click.testing.CliRunner().invoke(loaded, ["--help"], terminal_width=100).output
    assert lazy.split("Commands:")[1] == eager.split("Commands:")[1]
    assert sorted(cli.list_commands(click.Context(cli))) == sorted(v.name for v in _all_verbs())


@pytest.mark.parametrize(("typo", "verb"), [("vesion", "version"), ("alert", "alerts")])
def test_a_mistyped_verb_is_still_suggested(typo: str, verb: str, cli_env: dict[str, str]) -> None:
    """click suggests from the imported verbs: the ones not imported yet are offered too."""
    done = run_cli(typo, env=cli_env)
    assert done.returncode == 2
    assert done.stderr == f"error: dagwatch: No such command {typo!r}. Did you mean {verb!r}?\n"


def test_import_engine_is_cheap_and_exports_every_name() -> None:
    """`import engine` loads the authoring API on first use; every exported name resolves."""
    probe = (
        "import json, sys, engine\n"
        "before = sorted(sys.modules)\n"
        "from engine import *\n"
        "from engine import DAG, dag, task, task_group, utils\n"
        "import engine.sdk.dag, engine.sdk.task_group\n"
        "print(json.dumps([before, callable(engine.sdk.dag), callable(engine.sdk.task_group),"
        " engine.utils.__name__, [n for n in engine.__all__ if n not in globals()]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    before, dag_is_function, group_is_function, utils_name, missing = json.loads(done.stdout)
    assert _heavy(set(before)) == []
    assert dag_is_function and group_is_function  # not the submodules of the same name
    assert utils_name == "engine.utils"
    assert missing == []
