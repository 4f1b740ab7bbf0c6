"""Secrets backends: the chain of `secrets.backends` before the metastore, the
local_filesystem backend in each format, a backend registered by an installed package
through the `dagwatch.secrets` entry point, masking, and a failing backend."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import pytest

from engine import runtime
from engine.config import ConfigError
from engine.exceptions import NotFound
from engine.masking import redact
from engine.sdk.connections import Connection
from engine.sdk.variables import Variable
from engine.secrets_backends import SecretsBackendError
from engine.store.connections import add_connection
from engine.store.variables import set_variable

VARIABLES = {
    ".json": json.dumps(
        {"region": "eu-west-1", "limits": {"rows": 5}, "api_token": "tok-9a8b7c6d"}
    ),
    ".yaml": "region: eu-west-1\nlimits:\n  rows: 5\napi_token: tok-9a8b7c6d\n",
    ".env": '# deployment values\nregion=eu-west-1\nlimits={"rows": 5}\n\napi_token=tok-9a8b7c6d\n',
}
CONNECTIONS = {
    ".json": json.dumps(
        {
            "warehouse": "postgres://etl:pw-1f2e3d4c@db.example.com:5432/dw",
            "api": {
                "conn_type": "http",
                "host": "api.example.com",
                "password": "pw-api-5e6f7a",
                "extra_dejson": {"timeout": 10},
            },
        }
    ),
    ".yaml": textwrap.dedent(
        """
        warehouse: postgres://etl:pw-1f2e3d4c@db.example.com:5432/dw
        api:
          conn_type: http
          host: api.example.com
          password: pw-api-5e6f7a
          extra_dejson:
            timeout: 10
        """
    ),
    ".env": (
        "warehouse=postgres://etl:pw-1f2e3d4c@db.example.com:5432/dw\n"
        'api={"conn_type": "http", "host": "api.example.com", "password": "pw-api-5e6f7a", '
        '"extra": {"timeout": 10}}\n'
    ),
}


def _use(store, config, **overrides) -> None:
    runtime.configure(config.with_overrides(**overrides), store)


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".env"])
def test_local_filesystem_backend_reads_each_format(store, config, tmp_path, suffix):
    variables, connections = tmp_path / f"vars{suffix}", tmp_path / f"conns{suffix}"
    variables.write_text(VARIABLES[suffix])
    connections.write_text(CONNECTIONS[suffix])
    _use(
        store,
        config,
        secrets__backends="local_filesystem",
        secrets__variables_file_path=str(variables),
        secrets__connections_file_path=str(connections),
    )
    assert Variable.get("region") == "eu-west-1"
    assert Variable.get("limits", deserialize_json=True) == {"rows": 5}
    assert Variable.get("missing", default_var="fallback") == "fallback"
    warehouse = Connection.get("warehouse")
    assert (warehouse.conn_type, warehouse.host, warehouse.login, warehouse.port) == (
        "postgres", "db.example.com", "etl", 5432,
    )  # fmt: skip
    assert warehouse.password == "pw-1f2e3d4c"
    api = Connection.get("api")
    assert (api.conn_type, api.host, api.extra_dejson) == (
        "http",
        "api.example.com",
        {"timeout": 10},
    )
    # secrets are masked like the metastore's: passwords, sensitive keys; not plain values
    Variable.get("api_token")
    assert redact("pw-1f2e3d4c pw-api-5e6f7a tok-9a8b7c6d eu-west-1") == "*** *** *** eu-west-1"


def test_backends_are_asked_in_order_before_the_metastore(store, config, tmp_path, monkeypatch):
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps({"shared": "from-file", "file_only": "f"}))
    with store.session() as session:
        set_variable(session, "shared", "from-metastore", config=config)
        set_variable(session, "db_only", "d", config=config)
    monkeypatch.setenv("DAGWATCH_VAR_SHARED", "from-env")
    _use(
        store,
        config,
        secrets__backends="local_filesystem, env",
        secrets__variables_file_path=str(variables),
    )
    assert Variable.get("shared") == "from-file"
    assert (Variable.get("file_only"), Variable.get("db_only")) == ("f", "d")
    _use(store, config, secrets__backends="env,local_filesystem",
         secrets__variables_file_path=str(variables))  # fmt: skip
    assert Variable.get("shared") == "from-env"
    _use(store, config, secrets__backends="")  # only the metastore
    assert Variable.get("shared") == "from-metastore"


def test_a_broken_file_is_one_error_naming_the_backend_and_the_line(store, config, tmp_path):
    broken = tmp_path / "conns.env"
    broken.write_text("warehouse=postgres://a@b/c\nthis line has no equals sign\n")
    with store.session() as session:
        add_connection(session, Connection("warehouse", uri="postgres://old@db/dw"), config=config)
    _use(store, config, secrets__backends="local_filesystem",
         secrets__connections_file_path=str(broken))  # fmt: skip
    with pytest.raises(SecretsBackendError) as caught:
        Connection.get("warehouse")
    message = str(caught.value)
    assert "secrets backend 'local_filesystem' failed looking up connection 'warehouse'" in message
    assert f"{broken}: line 2 is not KEY=VALUE" in message
    assert "\n" not in message
    # a missing file is a failure too, not an empty backend
    _use(store, config, secrets__backends="local_filesystem",
         secrets__variables_file_path=str(tmp_path / "nope.yaml"))  # fmt: skip
    with pytest.raises(SecretsBackendError, match=r"nope\.yaml does not exist"):
        Variable.get("anything")


# -- a backend from an installed package -----------------------------------------------

BACKEND_MODULE = '''
from engine.secrets_backends import SecretsBackend

class VaultLike(SecretsBackend):
    """A secret manager stand-in: a dict, or a failure when `down`."""

    def __init__(self, mount="secret", down=False):
        self.mount, self.down = mount, down

    def get_variable(self, key):
        if self.down:
            raise ConnectionError(f"vault at https://vault.example.com ({self.mount}) refused")
        return {"db_password_rotated": "vault-Zq81xPw7", "color": "blue"}.get(key)

    def get_connection(self, conn_id):
        if conn_id == "payments":
            return {"conn_type": "http", "host": "pay.example.com", "password": "vault-pw-33aa"}
        return None

class VariablesOnly(SecretsBackend):
    def get_variable(self, key):
        return "from-variables-only" if key == "color" else None
'''


@pytest.fixture
def installed_backend(tmp_path, monkeypatch) -> str:
    """A tiny package installed in a site directory on sys.path: a module and a dist-info
    whose entry_points.txt registers two backends under dagwatch.secrets. Returns the
    name prefix of its backends (unique, so caches of other tests never match)."""
    name = f"vault{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{name}_backend.py").write_text(BACKEND_MODULE)
    info = site / f"{name}_backend-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-backend\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[dagwatch.secrets]\n{name} = {name}_backend:VaultLike\n"
        f"{name}_vars = {name}_backend:VariablesOnly\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    return name


def test_an_entry_point_backend_is_used_and_its_values_masked(store, config, installed_backend):
    name = installed_backend
    with store.session() as session:
        set_variable(session, "color", "from-metastore", config=config)
    _use(store, config, secrets__backends=f"env,{name}",
         secrets__backend_kwargs={name: {"mount": "kv"}})  # fmt: skip
    assert Variable.get("db_password_rotated") == "vault-Zq81xPw7"
    assert Variable.get("color") == "blue"  # before the metastore
    payments = Connection.get("payments")
    assert (payments.host, payments.password) == ("pay.example.com", "vault-pw-33aa")
    with pytest.raises(NotFound):
        Connection.get("unknown")
    # a secret manager's variable values are masked whatever their key
    assert redact("vault-Zq81xPw7 vault-pw-33aa") == "*** ***"


def test_a_failing_backend_stops_the_lookup_naming_it(store, config, installed_backend):
    name = installed_backend
    with store.session() as session:
        set_variable(session, "db_password_rotated", "old-password-in-db", config=config)
    _use(store, config, secrets__backends=name, secrets__backend_kwargs={name: {"down": True}})
    with pytest.raises(SecretsBackendError) as caught:
        Variable.get("db_password_rotated")
    assert str(caught.value) == (
        f"secrets backend {name!r} failed looking up variable 'db_password_rotated': "
        "ConnectionError: vault at https://vault.example.com (secret) refused; the later "
        "backends and the metastore were not asked (they may hold an older value)"
    )
    # a backend that cannot hold connections at all is passed by (safe): the next is asked
    with store.session() as session:
        add_connection(session, Connection("payments", uri="http://db-host"), config=config)
    _use(store, config, secrets__backends=f"{name}_vars")
    assert Connection.get("payments").host == "db-host"
    assert Variable.get("color") == "from-variables-only"


def test_a_backend_that_cannot_be_created_names_its_kwargs_table(store, config, installed_backend):
    name = installed_backend
    kwargs = {name: {"bogus": 1, "auth_token": "s.vaulttoken42"}}
    _use(store, config, secrets__backends=name, secrets__backend_kwargs=kwargs)
    with pytest.raises(SecretsBackendError) as caught:
        Variable.get("color")
    assert redact("token s.vaulttoken42") == "token ***"  # learnt from the table
    assert f"secrets backend {name!r} ({name}_backend:VaultLike) could not be created" in str(
        caught.value
    )
    assert f"[secrets.backend_kwargs.{name}]" in str(caught.value)


def test_an_unknown_backend_name_is_refused_by_the_config(config, installed_backend):
    with pytest.raises(ConfigError) as caught:
        config.with_overrides(secrets__backends="env,nosuchbackend")
    message = str(caught.value)
    assert "secrets.backends" in message and "nosuchbackend" in message
    assert "\n" not in message


def test_the_cli_reads_a_variable_through_an_entry_point_backend(
    cli_env, installed_backend, tmp_path
):
    """A real process: the backend is found as an installed package (PYTHONPATH)."""
    name = installed_backend
    env = {**cli_env, "PYTHONPATH": str(tmp_path / "site"), "DAGWATCH__SECRETS__BACKENDS": name}
    for args, shown in ((), "***"), (("--reveal",), "blue"):  # a secret manager's value
        result = subprocess.run(
            [sys.executable, "-m", "engine", "variables", "get", "color", *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == shown
    bad = subprocess.run(
        [sys.executable, "-m", "engine", "variables", "get", "color"],
        env={**env, "DAGWATCH__SECRETS__BACKENDS": "nosuchbackend"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2, bad.stderr
    assert "secrets.backends" in bad.stderr and "Traceback" not in bad.stderr


def test_the_cli_shows_a_connection_from_a_file_masked(cli_env, tmp_path):
    connections = tmp_path / "conns.yaml"
    connections.write_text(CONNECTIONS[".yaml"])
    env = {
        **cli_env,
        "DAGWATCH__SECRETS__BACKENDS": "local_filesystem",
        "DAGWATCH__SECRETS__CONNECTIONS_FILE_PATH": str(connections),
    }
    subprocess.run(
        [sys.executable, "-m", "engine", "db", "migrate"], env=env, check=True, timeout=120,
        capture_output=True,
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "engine", "connections", "get", "warehouse"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "host: db.example.com" in result.stdout
    assert "pw-1f2e3d4c" not in result.stdout and "password: ***" in result.stdout
