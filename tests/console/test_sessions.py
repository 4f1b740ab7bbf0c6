"""The login cookie's token: signed, expiring, revoked by a password or role change or by
deleting the user; its key is generated once, owner-only, unless configured."""

from __future__ import annotations

import stat
import time

import pytest

from console import sessions, users

NOW = float(int(time.time()))


@pytest.fixture
def key(config) -> bytes:
    return sessions.session_key(config)


@pytest.fixture
def ops(store) -> users.User:
    users.create_user(store, "ops", "operator", "pw-1")
    return users.User("ops", "operator")


def test_the_key_is_generated_once_owner_only(config, home):
    first = sessions.session_key(config)
    path = home / sessions.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sessions.session_key(config) == first and len(first) >= 48
    configured = config.with_overrides(console__session_secret="k" * 40)
    assert sessions.session_key(configured) == b"k" * 40


def test_a_token_stands_for_its_user_until_it_expires(store, key, ops):
    token = sessions.issue(store, key, ops, hours=1, now=NOW)
    assert "pw-1" not in token
    assert sessions.verify(store, key, token, now=NOW + 10) == ops
    assert sessions.verify(store, key, token, now=NOW + 3599) == ops
    assert sessions.verify(store, key, token, now=NOW + 3601) is None
    assert sessions.expires_in(key, token, now=NOW + 600) == 3000
    assert sessions.expires_in(key, token, now=NOW + 3601) == 0


def test_a_tampered_or_foreign_token_is_refused(store, key, ops):
    token = sessions.issue(store, key, ops, hours=1, now=NOW)
    version, payload, signature = token.split(".")
    admin = sessions._b64(b'{"u":"ops","exp":9999999999,"f":"x"}')
    for bad in (
        f"{version}.{admin}.{signature}",
        f"{version}.{payload}.{signature[:-2]}AA",
        f"v2.{payload}.{signature}",
        token.replace(".", ""),
        "",
        "not-a-token",
    ):
        assert sessions.verify(store, key, bad, now=NOW) is None, bad
    assert sessions.verify(store, b"another-key" * 4, token, now=NOW) is None


def test_deleting_the_user_or_changing_password_or_role_revokes_it(store, key, ops):
    token = sessions.issue(store, key, ops, hours=1, now=NOW)
    users.delete_user(store, "ops")
    assert sessions.verify(store, key, token, now=NOW) is None
    users.create_user(store, "ops", "operator", "pw-2")  # a new password
    assert sessions.verify(store, key, token, now=NOW) is None
    fresh = sessions.issue(store, key, ops, hours=1, now=NOW)
    assert sessions.verify(store, key, fresh, now=NOW) == ops
    users.delete_user(store, "ops")
    users.create_user(store, "ops", "viewer", "pw-2")  # same password, another role
    assert sessions.verify(store, key, fresh, now=NOW) is None
