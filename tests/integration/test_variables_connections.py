"""Variables and connections: encrypted at rest, environment first, secrets masked on read."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from engine import runtime
from engine.exceptions import NotFound, StoreError
from engine.sdk.connections import BaseHook, Connection
from engine.sdk.variables import Variable
from engine.secrets import redact, rotate_fernet_key
from engine.store.connections import (
    add_connection,
    delete_connection,
    get_connection,
    list_connections,
)
from engine.store.models import Connection as ConnectionRow
from engine.store.models import Variable as VariableRow
from engine.store.variables import delete_variable, get_variable, list_variables, set_variable

PG_URI = "postgresql://etl:p%40ss%2Fw0rd@db.example.com:5432/warehouse?sslmode=require"


def raw_rows(store) -> list[bytes]:
    """Every encrypted column as stored, to check no plaintext reaches the database."""
    with store.session(readonly=True) as session:
        values = list(session.scalars(select(VariableRow.val)))
        for row in session.scalars(select(ConnectionRow)):
            values += [row.password or b"", row.extra or b""]
    return [bytes(value) for value in values]


# --- variables ---------------------------------------------------------------------------


def test_variable_round_trip_list_and_delete(store, config):
    with store.session() as session:
        set_variable(session, "b", "two", description="second", config=config)
        set_variable(session, "a", "one", is_secret=True, config=config)
    with store.session() as session:
        set_variable(session, "b", "TWO", config=config)  # replace, keep the description

    with store.session(readonly=True) as session:
        records = list_variables(session, config=config)
        assert get_variable(session, "missing", config=config) is None
    assert [(r.key, r.value, r.is_secret, r.description) for r in records] == [
        ("a", "one", True, None),
        ("b", "TWO", False, "second"),
    ]
    assert records[0].as_row() == {
        "key": "a",
        "value": "***",
        "is_secret": True,
        "description": None,
    }
    with store.session() as session:
        assert delete_variable(session, "a") is True
        assert delete_variable(session, "a") is False


def test_stored_values_are_encrypted(store, config):
    Variable.set("plain_key", "visible-in-plaintext?")
    with store.session() as session:
        add_connection(
            session, Connection.from_uri("pg", PG_URI + "&api_token=tok-42"), config=config
        )

    stored = b"".join(raw_rows(store))
    assert len(raw_rows(store)) == 3
    for plaintext in (b"visible-in-plaintext?", b"p@ss/w0rd", b"tok-42", b"sslmode"):
        assert plaintext not in stored


def test_variable_get_prefers_the_environment(store, monkeypatch):
    Variable.set("region", "from-db")
    assert Variable.get("region") == "from-db"

    monkeypatch.setenv("DAGWATCH_VAR_REGION", "from-env")

    assert Variable.get("region") == "from-env"


def test_variable_get_missing_default_and_json(store):
    with pytest.raises(NotFound, match="Variable 'nope' does not exist"):
        Variable.get("nope")
    assert Variable.get("nope", default_var=None) is None
    assert Variable.get("nope", "fallback") == "fallback"

    Variable.set("settings", {"retries": 3, "tags": ["a"]}, serialize_json=True)

    assert Variable.get("settings", deserialize_json=True) == {"retries": 3, "tags": ["a"]}
    assert json.loads(Variable.get("settings")) == {"retries": 3, "tags": ["a"]}


def test_secret_variables_are_masked_once_read(store, monkeypatch):
    Variable.set("db_password", "hunter22-secret")  # sensitive name: secret by default
    Variable.set("greeting", "hello-world", is_secret=False)
    monkeypatch.setenv("DAGWATCH_VAR_SLACK_TOKEN", "xoxb-from-env")
    assert redact("hunter22-secret") == "hunter22-secret"  # nothing read yet

    Variable.get("db_password")
    Variable.get("greeting")
    Variable.get("slack_token")

    assert redact("pw hunter22-secret, hello-world, xoxb-from-env") == "pw ***, hello-world, ***"


def test_variable_delete_returns_the_count(store):
    Variable.set("k", "v")

    assert Variable.delete("k") == 1
    assert Variable.delete("k") == 0


def test_value_encrypted_with_a_forgotten_key_gives_a_clear_error(store, config):
    Variable.set("k", "v")
    other = config.with_overrides(core__fernet_key=Fernet.generate_key().decode())

    with pytest.raises(StoreError) as info, store.session() as session:
        get_variable(session, "k", config=other)

    assert "cannot decrypt variable 'k'" in str(info.value)
    assert "not in core.fernet_key" in str(info.value)


def test_rotate_fernet_key_re_encrypts_everything_with_the_first_key(store, config):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    old_config = config.with_overrides(core__fernet_key=old)
    with store.session() as session:
        set_variable(session, "k", "v", config=old_config)
        add_connection(session, Connection.from_uri("pg", PG_URI), config=old_config)
    before = raw_rows(store)

    assert rotate_fernet_key(store, config.with_overrides(core__fernet_key=f"{new},{old}")) == 2

    assert raw_rows(store) != before
    new_only = config.with_overrides(core__fernet_key=new)
    with store.session(readonly=True) as session:
        assert get_variable(session, "k", config=new_only).value == "v"
        assert get_connection(session, "pg", config=new_only).password == "p@ss/w0rd"


# --- connections -------------------------------------------------------------------------


def test_connection_storage_round_trip(store, config):
    original = Connection(
        "api",
        conn_type="http",
        host="api.example.com",
        login="me",
        password="s3cret!",
        port=443,
        extra={"timeout": 5, "headers": {"Authorization": "Bearer x"}},
        description="the API",
    )
    with store.session() as session:
        add_connection(session, original, config=config)
        add_connection(session, Connection.from_uri("pg", PG_URI), config=config)

    with store.session(readonly=True) as session:
        loaded = get_connection(session, "api", config=config)
        listed = [c.conn_id for c in list_connections(session, config=config)]
    assert Connection(**asdict(loaded)) == original  # the store returns plain records
    assert listed == ["api", "pg"]

    with pytest.raises(StoreError, match="connection 'api' already exists"):
        with store.session() as session:
            add_connection(session, original, config=config)
    with store.session() as session:
        add_connection(session, Connection("api", conn_type="ftp"), config=config, replace=True)
        assert get_connection(session, "api", config=config).password is None
        assert delete_connection(session, "api") is True
        assert delete_connection(session, "api") is False


def test_connection_get_prefers_the_environment_and_masks_secrets(store, config, monkeypatch):
    with store.session() as session:
        add_connection(session, Connection.from_uri("pg", PG_URI), config=config)
    assert Connection.get("pg").host == "db.example.com"
    assert redact("p@ss/w0rd p%40ss%2Fw0rd") == "*** ***"

    monkeypatch.setenv("DAGWATCH_CONN_PG", "postgres://u:envpass1@env-host/db?api_key=k-123")
    from_env = Connection.get("pg")

    assert (from_env.host, from_env.password) == ("env-host", "envpass1")
    assert redact("envpass1 k-123 env-host") == "*** *** env-host"


def test_connection_from_env_json_and_not_found(store, monkeypatch):
    monkeypatch.setenv(
        "DAGWATCH_CONN_SLACK", json.dumps({"conn_type": "http", "host": "hooks", "extra": {"a": 1}})
    )

    assert Connection.get("slack").extra_dejson == {"a": 1}
    with pytest.raises(NotFound, match="Connection 'nope' does not exist"):
        Connection.get("nope")


def test_base_hook_subclass_gets_its_connection(store, monkeypatch):
    class HttpHook(BaseHook):
        conn_name_attr = "http_conn_id"
        default_conn_name = "http_default"
        conn_type = "http"
        hook_name = "HTTP"

        def __init__(self, http_conn_id: str = default_conn_name) -> None:
            super().__init__()
            self.http_conn_id = http_conn_id

        def get_conn(self) -> str:
            return self.get_connection(getattr(self, self.conn_name_attr)).host or ""

    monkeypatch.setenv("DAGWATCH_CONN_HTTP_DEFAULT", "https://example.org")

    assert HttpHook().get_conn() == "example.org"
    assert HttpHook().log.name.endswith("HttpHook")
    assert runtime.get_store() is store


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            PG_URI,
            {"conn_type": "postgres", "host": "db.example.com", "login": "etl",
             "password": "p@ss/w0rd", "port": 5432, "schema": "warehouse",
             "extra": {"sslmode": "require"}},
        ),
        (
            "my-conn-type://login@host/?__extra__=%7B%22nested%22%3A+%7B%22a%22%3A+1%7D%7D",
            {"conn_type": "my_conn_type", "host": "host", "login": "login", "password": None,
             "port": None, "schema": None, "extra": {"nested": {"a": 1}}},
        ),
        (
            "http://https://example.com:8443/path",
            {"conn_type": "http", "host": "https://example.com", "login": None, "password": None,
             "port": 8443, "schema": "path", "extra": {}},
        ),
    ],
)  # fmt: skip
def test_from_uri_parses_like_airflow_and_get_uri_round_trips(uri, expected):
    connection = Connection.from_uri("c", uri)

    fields = connection.to_dict(masked=False)
    assert {key: fields[key] for key in expected} == expected
    assert Connection.from_uri("c", connection.get_uri()) == connection


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://h:port/x", "the port is not a number"),
        ("no-scheme-here", "expected type://"),
        ("a://b://c://d", "expected type://"),
    ],
)
def test_from_uri_refuses_malformed_uris(uri, message):
    with pytest.raises(ValueError, match=message):
        Connection.from_uri("c", uri)


def test_masked_dict_hides_password_and_sensitive_extra():
    connection = Connection(
        "c", conn_type="http", password="pw-123", extra={"api_key": "k", "nested": {"token": "t"}}
    )

    masked = connection.to_dict()

    assert masked["password"] == "***"
    assert masked["extra"] == {"api_key": "***", "nested": {"token": "***"}}
    assert connection.extra["api_key"] == "k"  # the connection itself is untouched
