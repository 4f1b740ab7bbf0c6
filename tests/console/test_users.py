"""Console users: scrypt hashes, never the password; `dagwatch users` on a real metastore."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from console import users
from engine.exceptions import DagwatchError
from engine.store.models import AuditLog, ConsoleUser
from tests.helpers import run_cli


def test_hash_is_salted_slow_and_verifies_only_the_right_password():
    first, second = users.hash_password("s3cret"), users.hash_password("s3cret")
    assert first != second and "s3cret" not in first
    assert first.startswith("scrypt$16384$8$1$")
    assert users.verify_password("s3cret", first)
    assert not users.verify_password("s3cret!", first)
    assert not users.verify_password("s3cret", "garbage") and not users.verify_password("x", None)


def test_create_authenticate_and_roles(store):
    users.create_user(store, "ops", "operator", "pw-1", actor="admin")
    assert users.authenticate(store, "ops", "pw-1") == users.User("ops", "operator")
    assert users.authenticate(store, "ops", "wrong") is None
    assert users.authenticate(store, "nobody", "pw-1") is None
    with pytest.raises(DagwatchError, match="role 'root' is not one of viewer, operator, admin"):
        users.create_user(store, "x", "root", "pw")
    with pytest.raises(DagwatchError, match="exists"):
        users.create_user(store, "ops", "viewer", "pw")
    with store.session(readonly=True) as session:
        row = session.get(ConsoleUser, "ops")
        assert row.password_hash != "pw-1" and row.last_login is not None
        events = session.execute(select(AuditLog.event, AuditLog.actor)).all()
    assert ("users.create", "admin") in events


def test_users_cli_reads_the_password_from_stdin_and_never_prints_it(store_env, store):
    created = run_cli(
        "users", "create", "--username", "vera", "--role", "viewer",
        env=store_env, input="hunter2-long\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "created user vera (viewer)" in created.stdout
    assert users.authenticate(store, "vera", "hunter2-long") == users.User("vera", "viewer")
    listed = run_cli("users", "list", "--output", "json", env=store_env)
    rows = json.loads(listed.stdout)
    assert [(r["username"], r["role"]) for r in rows] == [("vera", "viewer")]
    assert "hunter2" not in listed.stdout and "scrypt" not in listed.stdout
    bad_role = run_cli(
        "users", "create", "--username", "x", "--role", "boss", env=store_env, input="pw\n"
    )
    assert bad_role.returncode == 2 and "Traceback" not in bad_role.stderr
    empty = run_cli(
        "users", "create", "--username", "x", "--role", "admin", env=store_env, input="\n"
    )
    assert empty.returncode == 2 and "the password is empty" in empty.stderr
    deleted = run_cli("users", "delete", "vera", env=store_env)
    assert deleted.returncode == 0 and users.list_users(store) == []
