"""Helpers shared by tests: the real `dagwatch` command in a subprocess, scratch databases."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Mapping

import psycopg
from psycopg import sql


def run_cli(
    *args: str, env: Mapping[str, str], input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m engine ARGS` as a user would; stdin is closed unless `input` is given."""
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        env=dict(env),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def pg_admin_connect() -> psycopg.Connection:
    """An autocommit connection to the server's `postgres` database (CREATE/DROP DATABASE)."""
    return psycopg.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        dbname="postgres",
        autocommit=True,
        connect_timeout=5,
    )


def create_pg_database(prefix: str = "dagwatch_test", *, template: str | None = None) -> str:
    """Create a database with a random name, empty or a copy of database `template` (which
    nobody may be connected to); returns its SQLAlchemy URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with pg_admin_connect() as connection:
        connection.execute(statement)
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with pg_admin_connect() as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
