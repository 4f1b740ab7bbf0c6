"""Helpers shared by tests: the real `dagwatch` command in a subprocess, scratch databases."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from tests.cli_forks import Server


def run_cli(
    *args: str, env: Mapping[str, str], input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m engine ARGS` as a user would, in a process of its own with only `env`;
    stdin is closed unless `input` is given. The process is forked from a server that has
    imported dagwatch already (`tests.cli_forks`): a test that is about the interpreter's
    own start calls `subprocess` itself."""
    if _forks_allowed(env):
        stdin = subprocess.DEVNULL if input is None else subprocess.PIPE
        pipes = {"stdin": stdin, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        return _completed(_fork_server().popen(args, dict(env), **pipes, text=True), input, timeout)
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


def start_cli(
    *args: str,
    env: Mapping[str, str],
    stdin: Any = None,
    stdout: Any = None,
    stderr: Any = None,
    text: bool = False,
    start_new_session: bool = False,
) -> subprocess.Popen[Any]:
    """`subprocess.Popen([python, -m, engine, *args], env=env, ...)` for a command that
    runs on (a scheduler, a dispatcher, a console), forked as `run_cli`'s commands are:
    the same pipes, `poll`, `wait`, `communicate`, signals and exit code."""
    if _forks_allowed(env):
        streams = {"stdin": stdin, "stdout": stdout, "stderr": stderr}
        return _fork_server().popen(args, dict(env), **streams, text=text,
                                    start_new_session=start_new_session)  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        env=dict(env),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        text=text,
        start_new_session=start_new_session,
    )


def _completed(
    process: subprocess.Popen[str], input: str | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """What `subprocess.run` does with the process it started: its input in, its output
    out, killed (and waited for) if it outlives `timeout`."""
    with process:
        try:
            out, err = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


_server: Server | None = None


def _forks_allowed(env: Mapping[str, str]) -> bool:
    """Not for an environment that changes how the interpreter starts (PYTHONPATH...)."""
    if os.environ.get("DAGWATCH_TEST_REAL_CLI") == "1" or not hasattr(os, "pidfd_open"):
        return False
    return not any(name.startswith("PYTHON") for name in env)


def _fork_server() -> Server:
    global _server
    if _server is None:
        _server = Server()
    return _server


def stop_fork_server() -> None:
    """Stop `run_cli`'s fork server, if this process started one (at the session's end)."""
    if _server is not None:
        _server.stop()


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
