"""Bad values are refused at the door, run as a user runs them.

A configuration value (from dagwatch.toml or a DAGWATCH__ variable) or a command-line
argument that is not allowed ends the command with exit code 2 and exactly one line on
stderr naming the key or argument and what is allowed: never a traceback, and nothing
written to the metastore.
"""

from __future__ import annotations

import os
import sqlite3
import textwrap
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import create_pg_database, drop_pg_database, run_cli

DAG_FILE = textwrap.dedent(
    """
    import pendulum
    from engine import DAG, BashOperator

    with DAG("pipeline", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
        BashOperator(task_id="t", bash_command="true")
    """
)
INT = "an integer from {} to 2147483647"
EXECUTORS = "one of sequential, local, celery (the executors of this version)"
LONG = "x" * 300
GROUPS = {"pools", "dags", "tasks", "variables", "connections", "alerts", "sla"}


def ok(*args: str, env: dict[str, str]) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def refused(*args: str, env: dict[str, str]) -> str:
    """Run a command that must be refused: exit 2, one line on stderr, no traceback."""
    result = run_cli(*args, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def snapshot(home: Path) -> dict[str, list[str]]:
    """Every row of every table of the SQLite metastore, to compare before and after."""
    with closing(sqlite3.connect(home / "dagwatch.db")) as connection:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            table: sorted(repr(row) for row in connection.execute(f'SELECT * FROM "{table}"'))
            for table in tables
        }


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    """A migrated home with a DAG, a run, a pool, a variable and a connection."""
    home = tmp_path_factory.mktemp("bad_values") / "home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "pipeline.py").write_text(DAG_FILE)
    env = {
        "DAGWATCH_HOME": str(home),
        "USER": "dagwatch-test",
        "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        **{name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ},
    }
    ok("db", "migrate", env=env)
    ok("dags", "reserialize", env=env)
    ok("dags", "trigger", "pipeline", "--run-id", "r1", env=env)
    ok("pools", "set", "etl", "3", env=env)
    ok("variables", "set", "region", "eu", env=env)
    ok("connections", "add", "api", "--conn-uri", "http://api.example.com:8080", env=env)
    return env, home


@pytest.fixture
def env(seeded: tuple[dict[str, str], Path]) -> Any:
    """The seeded environment; the test fails if its metastore changed."""
    environ, home = seeded
    before = snapshot(home)
    yield environ
    assert snapshot(home) == before


# key, TOML literal, environment value, what the error says is allowed
CONFIG_CASES = [
    ("core.parallelism", "0", "0", INT.format(1)),
    ("core.parallelism", "'many'", "many", INT.format(1)),
    ("core.executor", "'dask'", "dask", EXECUTORS),
    ("core.executor", "'kubernetes'", "kubernetes", EXECUTORS),
    ("core.default_pool_slots", "3000000000", "3000000000", INT.format(0)),
    ("core.worker_max_attempts", "-1", "-1", INT.format(0) + " (0: no limit)"),
    ("core.load_examples", "'maybe'", "maybe", "true or false"),
    ("core.dag_file_processor_timeout", "0", "0", "a number from 0.1 to 31536000"),
    ("core.worker_idle_timeout", "inf", "inf", "a number from 0 to 31536000"),
    ("core.default_timezone", "'Mars/Olympus'", "Mars/Olympus", "an IANA timezone name"),
    ("core.attempt_isolation", "'thread'", "thread", "one of worker, process"),
    ("core.dags_folder", "''", "", "a path (not empty)"),
    ("scheduler.loop_interval", "-1", "-1", "a number from 0 to 31536000"),
    ("scheduler.heartbeat_timeout", "nan", "nan", "a number from 1 to 31536000"),
    ("metrics.prometheus_port", "70000", "70000", "an integer from 0 to 65535 (0: any free"),
    ("metrics.statsd_port", "0", "0", "an integer from 1 to 65535"),
    ("metrics.statsd_host", "' '", " ", "a host name or address"),
    ("metrics.statsd_tags", "'datadog'", "datadog", "one of none, dogstatsd, influxdb"),
    ("metrics.prometheus_on", "'perhaps'", "perhaps", "true or false"),
    ("alerts.max_attempts", "0", "0", INT.format(1)),
    ("alerts.forecast_quantile", "1.5", "1.5", "a number from 0.5 to 1"),
    ("alerts.console_url", "'localhost:8501'", "localhost:8501", "an http:// or https:// URL"),
    ("alerts.miss_after_failure", "'ignore'", "ignore", "one of fold, page"),
    ("logging.level", "'LOUD'", "LOUD", "one of DEBUG, INFO, WARNING, ERROR"),
    ("logging.base_log_folder", "''", "", "a folder path (not empty, not a file)"),
]


def env_variable(key: str) -> str:
    return "DAGWATCH__" + key.replace(".", "__").upper()


@pytest.mark.parametrize(("key", "toml", "raw", "allowed"), CONFIG_CASES)
def test_a_bad_environment_value_is_one_line_naming_the_variable(env, key, toml, raw, allowed):
    line = refused("pools", "set", "etl", "7", env={**env, env_variable(key): raw})

    assert line.startswith(f"error: {key} = {raw!r} (from {env_variable(key)}): must be ")
    assert allowed in line


@pytest.mark.parametrize(("key", "toml", "raw", "allowed"), CONFIG_CASES[::2])
def test_a_bad_file_value_is_one_line_naming_the_file(seeded, env, key, toml, raw, allowed):
    home = seeded[1]
    section, name = key.split(".")
    (home / "dagwatch.toml").write_text(f"[{section}]\n{name} = {toml}\n")
    try:
        line = refused("variables", "set", "region", "us", env=env)
    finally:
        (home / "dagwatch.toml").unlink()

    assert line.startswith(f"error: {key} = ")
    assert f"(from {home / 'dagwatch.toml'}): must be " in line
    assert allowed in line


def test_a_bad_metastore_url_is_refused_without_showing_its_password(env):
    variable = "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN"
    line = refused("pools", "list", env={**env, variable: "mysql://dw:hunter2@db/dw"})

    assert line.startswith(
        f"error: database.sql_alchemy_conn = 'mysql://dw:***@db/dw' (from {variable})"
    )
    assert "hunter2" not in line


@pytest.mark.parametrize("source", ["file", "env"])
def test_the_scheduler_with_port_70000_exits_2_at_once_with_one_line(seeded, env, source):
    home = seeded[1]
    extra = {"DAGWATCH__METRICS__PROMETHEUS_ON": "true"}
    if source == "env":
        extra["DAGWATCH__METRICS__PROMETHEUS_PORT"] = "70000"
    else:
        (home / "dagwatch.toml").write_text("[metrics]\nprometheus_port = 70000\n")
    try:
        line = refused("scheduler", env={**env, **extra})  # a started scheduler would not end
    finally:
        (home / "dagwatch.toml").unlink(missing_ok=True)

    assert line.startswith("error: metrics.prometheus_port = ")
    assert line.endswith("must be an integer from 0 to 65535 (0: any free port)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pools", "set", "p1", "99999999999999999999999"],
         "Invalid value for 'SLOTS': 99999999999999999999999 is not " + INT.format(0)),
        (["pools", "set", "p1", "2147483648"], "'SLOTS': 2147483648 is not " + INT.format(0)),
        (["pools", "set", "p1", "-1"], "Invalid value for 'SLOTS': -1 is not " + INT.format(0)),
        (["pools", "set", "p1", "many"], "'SLOTS': 'many' is not " + INT.format(0)),
        (["pools", "set", "", "3"], "'NAME': '' is not allowed: it must not be empty"),
        (["pools", "set", LONG, "3"], "'NAME': 'xxxxxxxxxxxxxxxxxxxx'... (300 characters)"),
        (["pools", "delete", " "], "'NAME': ' ' is not allowed: it must not be empty"),
        (["pools", "list", "--output", "xml"], "'xml' is not one of 'table', 'json'"),
        (["dags", "list-runs", "--limit", "0"], "'--limit': 0 is not " + INT.format(1)),
        (["dags", "list-runs", "--limit", "99999999999999999999"], "is not " + INT.format(1)),
        (["dags", "trigger", "pipeline", "--conf", '{"a": NaN}'], "NaN is not a JSON number"),
        (["dags", "trigger", "pipeline", "--conf", '{"a": 1e999}'], "1e999 is too large"),
        (["dags", "trigger", "pipeline", "--conf", "[1]"], "must be a JSON object"),
        (["dags", "trigger", "pipeline", "--logical-date", "2026-13-45"], "ISO 8601"),
        (["dags", "trigger", "pipeline", "--logical-date", "0001-01-01T00:00:00+14:00"],
         "'0001-01-01T00:00:00+14:00' is out of range: dates from 1000-01-01 to 9998-12-31"),
        (["dags", "backfill", "pipeline", "-s", "9999-12-01", "-e", "9999-12-31"],
         "'--start' / '-s': '9999-12-01T00:00:00' is out of range"),
        (["dags", "trigger", "pipeline", "--run-id", ""], "'--run-id': '' is not allowed"),
        (["dags", "trigger", "pipeline", "--run-id", LONG], "at most 250 characters"),
        (["dags", "unpause", ""], "'DAG_ID': '' is not allowed"),
        (["dags", "state", "pipeline", ""], "'RUN_ID': '' is not allowed"),
        (["dags", "backfill", "pipeline", "-s", "2026-01-05", "-e", "2026-01-01"], "is after"),
        (["dags", "test", " "], "'DAG_ID': ' ' is not allowed"),
        (["tasks", "failed-deps", "pipeline", "r1", "t", "--map-index", "99999999999999999999"],
         "'--map-index': 99999999999999999999 is not " + INT.format(0)),
        (["tasks", "failed-deps", "pipeline", "r1", "t", "--map-index", "-1"],
         "'--map-index': -1 is not " + INT.format(0)),
        (["tasks", "clear", "pipeline", "-t", "(", "--yes"], "is not a valid regex"),
        (["tasks", "test", "pipeline", ""], "'TASK_ID': '' is not allowed"),
        (["variables", "set", "", "v"], "'KEY': '' is not allowed"),
        (["variables", "set", "k", "[Infinity]", "--json"], "Infinity is not a JSON number"),
        (["variables", "get", ""], "'KEY': '' is not allowed"),
        (["connections", "add", "c", "--conn-type", "http", "--conn-port", "70000"],
         "'--conn-port': 70000 is not an integer from 0 to 65535"),
        (["connections", "add", "c", "--conn-type", "x" * 101], "at most 100 characters"),
        (["connections", "add", "c", "--conn-uri", f"http://h/{'s' * 501}"],
         "the schema of --conn-uri: 'ssssssssssssssssssss'... (501 characters)"),
        (["connections", "delete", ""], "'CONN_ID': '' is not allowed"),
        (["scheduler", "--grace", "-1"], "'--grace': '-1' is not a number of seconds from 0 to"),
        (["scheduler", "--grace", "inf"], "'--grace': 'inf' is not a number of seconds"),
        (["scheduler", "--grace", "nan"], "'--grace': 'nan' is not a number of seconds"),
        (["standalone", "--grace", "1e400"], "'--grace': '1e400' is not a number of seconds"),
        (["dag-processor", "extra"], "Got unexpected extra argument (extra)"),
        (["alerts", "resend", "99999999999999999999"], "'ALERT_ID': 99999999999999999999 is not"),
        (["alerts", "list", "--limit", "99999999999999999999"], "is not " + INT.format(0)),
        (["sla", "list", "--limit", "-5"], "'--limit': -5 is not " + INT.format(0)),
    ],
)  # fmt: skip
def test_a_bad_argument_is_one_line_naming_it_and_what_is_allowed(env, args, message):
    line = refused(*args, env=env)

    command = " ".join(args[:2]) if args[0] in GROUPS else args[0]
    assert line.startswith(f"error: dagwatch {command}: ")
    assert message in line


DAG_FOLDER_VERBS = [
    ["dags", "list"],
    ["dags", "reserialize"],
    ["dags", "test", "pipeline"],
    ["tasks", "test", "pipeline", "t"],
    ["scheduler"],
    ["dag-processor"],
    ["standalone"],
]


@pytest.mark.parametrize("verb", DAG_FOLDER_VERBS, ids=" ".join)
@pytest.mark.parametrize("problem", ["does not exist", "is a file"])
def test_a_configured_dags_folder_that_is_missing_or_a_file_is_refused(
    seeded, env, tmp_path, verb, problem
):
    folder = tmp_path / "my_dags"
    if problem == "is a file":
        folder.write_text(DAG_FILE)

    line = refused(*verb, env={**env, "DAGWATCH__CORE__DAGS_FOLDER": str(folder)})

    assert line == (
        f"error: core.dags_folder = '{folder}' (from DAGWATCH__CORE__DAGS_FOLDER) {problem}; "
        "it must be an existing folder of DAG files"
    )


def test_the_default_dags_folder_is_created_when_missing(cli_env, home):
    ok("db", "migrate", env=cli_env)
    assert not (home / "dags").exists()

    ok("dags", "list", env=cli_env)

    assert (home / "dags").is_dir()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_largest_slots_fit_the_column_and_one_more_is_refused(request, cli_env, home, backend):
    env = dict(cli_env)
    if backend == "postgres":
        request.getfixturevalue("pg_url")  # skip or fail like the other PostgreSQL tests
        url = create_pg_database("dagwatch_test_bad_values")
        request.addfinalizer(lambda: drop_pg_database(url))
        env["DAGWATCH__DATABASE__SQL_ALCHEMY_CONN"] = url
    ok("db", "migrate", env=env)

    ok("pools", "set", "big", "2147483647", env=env)
    before = ok("pools", "list", "--output", "json", env=env)
    line = refused("pools", "set", "big", "2147483648", env=env)
    long_host = refused(
        "connections", "add", "c", "--conn-type", "http", "--conn-host", "h" * 501, env=env
    )

    assert "2147483648 is not an integer from 0 to 2147483647" in line
    assert "at most 500 characters" in long_host
    assert ok("pools", "list", "--output", "json", env=env) == before
    assert '"slots": 2147483647' in before
    assert ok("connections", "list", env=env).strip() == "(no rows)"
