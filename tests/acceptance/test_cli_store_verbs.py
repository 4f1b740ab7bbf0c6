"""The db, variables, connections, pools, config and version verbs, run as a user runs them."""

from __future__ import annotations

import json
import sqlite3

import pytest
from cryptography.fernet import Fernet

from engine.store.migrate import head_revision
from tests.helpers import create_pg_database, drop_pg_database, run_cli


def ok(*args: str, env: dict[str, str], input: str | None = None) -> str:
    result = run_cli(*args, env=env, input=input)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def one_line_error(result, code: int) -> str:
    """A failure is exactly one line on stderr, no traceback, and the expected exit code."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.stdout, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def audit_events(home) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "dagwatch.db") as connection:
        return connection.execute("SELECT actor, event FROM audit_log ORDER BY id").fetchall()


@pytest.fixture
def migrated(cli_env, home):
    ok("db", "migrate", env=cli_env)
    return cli_env


def test_db_migrate_twice_then_check(cli_env, home):
    first = ok("db", "migrate", env=cli_env)
    second = ok("db", "migrate", env=cli_env)

    assert f"is at revision {head_revision()}" in first
    assert second == first
    assert "ok: " in ok("db", "check", env=cli_env)
    assert audit_events(home) == [("dagwatch-test", "db.migrate")] * 2


def test_db_check_lists_problems_and_exits_1(cli_env):
    result = run_cli("db", "check", env=cli_env)

    assert result.returncode == 1
    assert "problem: " in result.stderr
    assert "is not migrated" in result.stderr


def test_unmigrated_metastore_is_one_clear_line(cli_env):
    line = one_line_error(run_cli("variables", "list", env=cli_env), 1)

    assert "run `dagwatch db migrate`" in line


def test_db_reset_needs_confirmation(migrated, home):
    ok("pools", "set", "etl", "3", env=migrated)

    refused = run_cli("db", "reset", env=migrated)  # stdin closed: no answer
    assert "not confirmed" in one_line_error(refused, 1)
    declined = run_cli("db", "reset", env=migrated, input="n\n")
    assert declined.returncode == 1
    assert "etl" in ok("pools", "list", env=migrated)

    ok("db", "reset", env=migrated, input="y\n")
    assert "etl" not in ok("pools", "list", env=migrated)
    ok("pools", "set", "etl", "3", env=migrated)
    ok("db", "reset", "--yes", env=migrated)
    assert "etl" not in ok("pools", "list", env=migrated)
    assert audit_events(home) == [("dagwatch-test", "db.reset")]  # the log starts afresh


def test_variables_set_get_list_delete(migrated, home):
    ok("variables", "set", "region", "eu-west-1", "--description", "where", env=migrated)
    ok("variables", "set", "api_key", "k-very-secret", env=migrated)  # secret by its name
    ok("variables", "set", "cfg", '{"a": 1}', "--json", "--secret", env=migrated)

    assert ok("variables", "get", "region", env=migrated) == "eu-west-1\n"
    assert ok("variables", "get", "api_key", env=migrated) == "***\n"
    assert ok("variables", "get", "api_key", "--reveal", env=migrated) == "k-very-secret\n"
    assert ok("variables", "get", "cfg", env=migrated) == "***\n"  # secret by --secret
    assert ok("variables", "get", "region", "--reveal", env=migrated) == "eu-west-1\n"
    listing = json.loads(ok("variables", "list", "--output", "json", env=migrated))
    assert listing == [
        {"key": "api_key", "value": "***", "is_secret": True, "description": None},
        {"key": "cfg", "value": "***", "is_secret": True, "description": None},
        {"key": "region", "value": "eu-west-1", "is_secret": False, "description": "where"},
    ]
    assert "k-very-secret" not in ok("variables", "list", env=migrated)

    ok("variables", "delete", "region", env=migrated)
    missing = run_cli("variables", "get", "region", env=migrated)
    assert "variable 'region' does not exist" in one_line_error(missing, 1)
    assert ok("variables", "get", "region", "--default", "none", env=migrated) == "none\n"
    assert "does not exist" in one_line_error(run_cli("variables", "delete", "x", env=migrated), 1)
    assert [event for _, event in audit_events(home)] == [
        "db.migrate",
        "variables.set",
        "variables.set",
        "variables.set",
        "variables.delete",
    ]


def test_connections_add_list_get_delete_never_print_the_password(migrated, home):
    uri = "postgresql://etl:pa55-w0rd@db.example.com:5432/dw?sslmode=require&api_token=tk-1"
    ok("connections", "add", "pg", "--conn-uri", uri, env=migrated)
    ok(
        "connections", "add", "api", "--conn-type", "http", "--conn-host", "api.example.com",
        "--conn-password", "pa55-api", "--conn-port", "443", "--conn-extra", '{"timeout": 5}',
        env=migrated,
    )  # fmt: skip

    table = ok("connections", "list", env=migrated)
    listing = json.loads(ok("connections", "list", "-o", "json", env=migrated))
    shown = ok("connections", "get", "pg", "-o", "json", env=migrated)
    for output in (table, json.dumps(listing), shown):
        assert "pa55" not in output
        assert "tk-1" not in output
    assert [(c["conn_id"], c["password"], c["port"]) for c in listing] == [
        ("api", "***", 443),
        ("pg", "***", 5432),
    ]
    assert json.loads(shown)["extra"] == {"sslmode": "require", "api_token": "***"}
    duplicate = run_cli("connections", "add", "pg", "--conn-uri", uri, env=migrated)
    assert "already exists" in one_line_error(duplicate, 1)

    ok("connections", "delete", "pg", env=migrated)
    assert "does not exist" in one_line_error(run_cli("connections", "get", "pg", env=migrated), 1)
    with sqlite3.connect(home / "dagwatch.db") as connection:
        stored = connection.execute("SELECT password, extra FROM connection").fetchall()
    assert all(b"pa55" not in (value or b"") for row in stored for value in row)


def test_pools_set_list_delete(migrated):
    ok("pools", "set", "etl", "4", "nightly loads", env=migrated)

    pools = json.loads(ok("pools", "list", "--output", "json", env=migrated))

    assert pools == [
        {"pool": "default_pool", "slots": 128, "running_slots": 0, "queued_slots": 0,
         "open_slots": 128, "description": "Default pool"},
        {"pool": "etl", "slots": 4, "running_slots": 0, "queued_slots": 0,
         "open_slots": 4, "description": "nightly loads"},
    ]  # fmt: skip
    ok("pools", "delete", "etl", env=migrated)
    assert [p["pool"] for p in json.loads(ok("pools", "list", "-o", "json", env=migrated))] == [
        "default_pool"
    ]


def test_deleting_default_pool_is_refused_in_one_line(migrated):
    line = one_line_error(run_cli("pools", "delete", "default_pool", env=migrated), 1)

    assert line == "error: default_pool cannot be deleted; set its slots instead"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pools", "set", "p", "-1"], "-1"),
        (["pools", "set", "p", "abc"], "'abc' is not an integer"),
        (["pools", "set", "p"], "Missing argument 'SLOTS'"),
        (["pools", "nope"], "No such command 'nope'"),
        (["variables", "set", "k", "{not json", "--json"], "VALUE is not valid JSON"),
        (["connections", "add", "c", "--conn-type", "http", "--conn-port", "x"], "'x' is not an"),
        (["connections", "add", "c", "--conn-type", "x", "--conn-extra", "{bad"], "not valid JSON"),
        (["connections", "add", "c", "--conn-type", "http", "--conn-extra", "[1]"], "JSON object"),
        (["connections", "add", "c", "--conn-uri", "http://h:port/x"], "port is not a number"),
        (["connections", "add", "c"], "give --conn-uri, or --conn-type"),
        (["connections", "add", "c", "--conn-uri", "http://h", "--conn-type", "x"], "not both"),
        (["pools", "list", "--output", "yaml"], "'yaml' is not one of"),
    ],
)  # fmt: skip
def test_bad_usage_exits_2_with_one_line_and_writes_nothing(cli_env, home, args, message):
    result = run_cli(*args, env=cli_env)

    assert message in one_line_error(result, 2)
    assert "Traceback" not in result.stderr
    assert list(home.iterdir()) == []  # not even the database file or a key was created


def test_config_list_masks_secrets_and_shows_sources(cli_env, home):
    (home / "dagwatch.toml").write_text("[core]\nparallelism = 8\n")
    key = Fernet.generate_key().decode()
    env = {**cli_env, "DAGWATCH__CORE__FERNET_KEY": key, "DAGWATCH__CORE__EXECUTOR": "sequential"}

    rows = json.loads(ok("config", "list", "--output", "json", env=env))

    by_name = {f"{row['section']}.{row['key']}": row for row in rows}
    assert by_name["core.fernet_key"] == {
        "section": "core", "key": "fernet_key", "value": "***", "source": "env"
    }  # fmt: skip
    assert (by_name["core.parallelism"]["value"], by_name["core.parallelism"]["source"]) == (
        "8",
        "file",
    )
    assert by_name["core.executor"]["source"] == "env"
    assert by_name["core.load_examples"]["source"] == "default"
    assert key not in ok("config", "list", env=env)
    assert ok("config", "get-value", "core", "parallelism", env=env) == "8\n"


@pytest.mark.parametrize(
    ("section", "key", "env_value", "masked"),
    [
        ("core", "fernet_key", Fernet.generate_key().decode(), "***"),
        ("database", "sql_alchemy_conn", "postgresql+psycopg://ops:db-pa55@db/dw",
         "postgresql+psycopg://ops:***@db/dw"),
        ("alerts", "routes", json.dumps({"oncall": {"urls": ["json://u:rt-pa55@h/x"]}}),
         "{oncall: ***}"),
        ("alerts", "fallback_urls", "slack://T0KEN-A/T0KEN-B/T0KEN-C", "***"),
    ],
    # stable ids: a random key in the id would differ between pytest-xdist workers
    ids=["fernet_key", "sql_alchemy_conn", "routes", "fallback_urls"],
)  # fmt: skip
def test_config_get_value_masks_secrets_unless_revealed(cli_env, section, key, env_value, masked):
    env = {**cli_env, f"DAGWATCH__{section.upper()}__{key.upper()}": env_value}

    shown = ok("config", "get-value", section, key, env=env)
    revealed = ok("config", "get-value", section, key, "--reveal", env=env)

    assert shown == masked + "\n"
    assert env_value not in shown
    if section == "alerts" and key == "routes":
        assert json.loads(revealed) == json.loads(env_value)  # the table, as JSON
    else:
        assert revealed == env_value + "\n"
    assert "--reveal" in ok("config", "get-value", "--help", env=env)


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        # a value the configuration refuses is a usage error (2); a metastore that cannot
        # be reached is a failure (1)
        ("DAGWATCH__ALERTS__ROUTES", '{"r": {"urls": ["json://u:bad-s3cret@h/x"]', 2),
        ("DAGWATCH__ALERTS__ROUTES", '["json://u:bad-s3cret@h/x"]', 2),
        (
            "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN",
            "postgresql+psycopg://u:bad-s3cret@127.0.0.1:1/x",
            1,
        ),
    ],
)
def test_an_error_about_a_secret_value_never_prints_it(cli_env, name, value, code):
    result = run_cli("dags", "list", env={**cli_env, name: value})

    line = one_line_error(result, code)
    assert name.split("__")[-1].lower() in line or "metastore" in line
    assert "bad-s3cret" not in result.stdout + result.stderr


def test_unknown_config_env_var_fails_naming_the_key(cli_env):
    result = run_cli("config", "list", env={**cli_env, "DAGWATCH__CORE__NOPE": "1"})

    line = one_line_error(result, 2)
    assert "'core.nope'" in line
    assert "DAGWATCH__CORE__NOPE" in line


def test_version_prints_the_package_version(cli_env):
    assert ok("version", env=cli_env).strip() == "0.1.0"


@pytest.mark.postgres
def test_db_migrate_and_check_on_postgres(cli_env, pg_url):
    url = create_pg_database("dagwatch_test_cli")
    env = {**cli_env, "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": url}
    try:
        assert f"is at revision {head_revision()}" in ok("db", "migrate", env=env)
        ok("db", "migrate", env=env)
        assert "ok: " in ok("db", "check", env=env)
        ok("pools", "set", "pg_pool", "2", env=env)
        assert "pg_pool" in ok("pools", "list", env=env)
    finally:
        drop_pg_database(url)
