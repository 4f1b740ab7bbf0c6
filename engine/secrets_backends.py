"""Secrets backends: where Variables and Connections come from, in order, before the metastore.

`secrets.backends` names them, comma-separated; the metastore is always asked last:

- `env`: `DAGWATCH_VAR_<KEY>` and `DAGWATCH_CONN_<ID>` (the default);
- `local_filesystem`: the files `secrets.variables_file_path` and
  `secrets.connections_file_path`, JSON, YAML or `.env` (Airflow's LocalFilesystemBackend
  formats);
- any backend a package registers under the `dagwatch.secrets` entry-point group (a
  subclass of `SecretsBackend`), built with the keyword arguments of its
  `[secrets.backend_kwargs.NAME]` table.

A backend that does not hold a key returns None and the next one is asked. A backend that
fails (unreachable, denied, a file that does not parse) ends the lookup with one
`SecretsBackendError` naming it: the next backend is not asked, because what a later
backend holds may be the old value the failing one exists to replace. The one exception is
a backend that cannot hold that kind at all (it leaves `get_variable` or `get_connection`
unimplemented): it is passed by.

Values are masked like the others (`engine.masking`): a connection's password and its
sensitive extras always; a variable when its key looks sensitive, or always when it comes
from a backend whose `masks_values` is true (every entry-point backend by default: a
secret manager holds secrets).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.exceptions import DagwatchError

if TYPE_CHECKING:
    from engine.config import Config

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dagwatch.secrets"
VAR_ENV_PREFIX = "DAGWATCH_VAR_"
CONN_ENV_PREFIX = "DAGWATCH_CONN_"
BUILTIN_NAMES = ("env", "local_filesystem")


class SecretsBackendError(DagwatchError):
    """A secrets backend failed (or is misconfigured); the message names it."""


class SecretsBackend:
    """The interface: subclass it, override what your backend holds, register the class
    under the `dagwatch.secrets` entry-point group. The constructor receives the keyword
    arguments of `[secrets.backend_kwargs.<name>]`."""

    #: mask every variable value it returns, not only those under sensitive keys
    masks_values: bool = True

    def get_variable(self, key: str) -> str | None:
        """The variable's value, or None when this backend does not hold it."""
        raise NotImplementedError

    def get_connection(self, conn_id: str) -> Any:
        """The connection (a `Connection`, a URI string or a dict of its fields), or None."""
        raise NotImplementedError


class EnvBackend(SecretsBackend):
    """`DAGWATCH_VAR_<KEY>` and `DAGWATCH_CONN_<ID>` (a URI or a JSON object)."""

    masks_values = False

    def get_variable(self, key: str) -> str | None:
        return os.environ.get(f"{VAR_ENV_PREFIX}{key.upper()}")

    def get_connection(self, conn_id: str) -> Any:
        from engine.sdk.connections import Connection

        return Connection.from_env(conn_id)


class LocalFilesystemBackend(SecretsBackend):
    """Variables and connections from local files, read at each lookup (so a file that a
    sidecar or a Kubernetes Secret volume rewrites is seen at once).

    Formats, chosen by the file's extension:
    - `.env`: `KEY=VALUE` lines (`#` comments); a connection's value is a URI or a JSON
      object of its fields;
    - `.json`, `.yaml` / `.yml`: one object; a variable's value is a string (anything else
      is stored as its JSON text), a connection's value a URI or an object of its fields
      (`conn_type`, `host`, `login`, `password`, `schema`, `port`, `extra` or
      `extra_dejson`, `description`).
    """

    masks_values = False

    def __init__(self, variables_file_path: Any = None, connections_file_path: Any = None):
        self.variables_file = Path(variables_file_path) if variables_file_path else None
        self.connections_file = Path(connections_file_path) if connections_file_path else None

    def get_variable(self, key: str) -> str | None:
        if self.variables_file is None:
            return None
        value = _read_secret_file(self.variables_file).get(key)
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value)

    def get_connection(self, conn_id: str) -> Any:
        if self.connections_file is None:
            return None
        value = _read_secret_file(self.connections_file).get(conn_id)
        if isinstance(value, str) and value.lstrip().startswith("{"):
            value = json.loads(value)  # a .env line may hold a JSON object
        if isinstance(value, Mapping) and "extra_dejson" in value:
            value = {k: v for k, v in value.items() if k != "extra_dejson"} | {
                "extra": value["extra_dejson"]
            }
        if value is not None and not isinstance(value, str | Mapping):
            raise ValueError(
                f"{self.connections_file}: connection {conn_id!r} must be a URI or an object "
                f"of its fields, not {type(value).__name__}"
            )
        return value


def _read_secret_file(path: Path) -> dict[str, Any]:
    """The key/value pairs of a JSON, YAML or .env file."""
    suffix = path.suffix.lower()
    if path.name.endswith(".env"):
        suffix = ".env"
    if suffix not in (".env", ".json", ".yaml", ".yml"):
        raise ValueError(
            f"{path}: unsupported file type {suffix or '(none)'}; use .json, .yaml or .env"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist") from None
    if suffix == ".env":
        return _parse_env_file(path, text)
    if suffix == ".json":
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"{path}: invalid YAML{where}") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected an object of keys, not {type(data).__name__}")
    return dict(data)


def _parse_env_file(path: Path, text: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ValueError(f"{path}: line {number} is not KEY=VALUE")
        if key in found:
            raise ValueError(f"{path}: line {number}: {key!r} is defined twice")
        found[key] = value.strip()
    return found


# -- the configured chain --------------------------------------------------------------


def _registered() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def names_of(raw: str) -> list[str]:
    return [name.strip() for name in str(raw).split(",") if name.strip()]


def check_names(raw: Any) -> bool:
    """The config check of `secrets.backends`: every name is built in or registered."""
    names = names_of(raw)
    unknown = [name for name in names if name not in BUILTIN_NAMES]
    return len(set(names)) == len(names) and (not unknown or set(unknown) <= set(_registered()))


def allowed_names() -> str:
    registered = sorted(set(_registered()) - set(BUILTIN_NAMES))
    extra = ", ".join(registered) if registered else f"none installed ({ENTRY_POINT_GROUP})"
    return (
        "a comma-separated list, each name once, of env, local_filesystem and the backends "
        f"packages register under the {ENTRY_POINT_GROUP} entry point: {extra}"
    )


def configured(config: Config) -> list[tuple[str, SecretsBackend]]:
    """(name, backend) in the order of `secrets.backends`."""
    kwargs = config["secrets.backend_kwargs"] or {}
    return list(
        _build(
            tuple(names_of(config["secrets.backends"])),
            str(config["secrets.variables_file_path"] or ""),
            str(config["secrets.connections_file_path"] or ""),
            json.dumps(kwargs, sort_keys=True, default=str),
        )
    )


@lru_cache(maxsize=16)
def _build(
    names: tuple[str, ...], variables_file: str, connections_file: str, kwargs_json: str
) -> tuple[tuple[str, SecretsBackend], ...]:
    all_kwargs = json.loads(kwargs_json)
    built: list[tuple[str, SecretsBackend]] = []
    for name in names:
        if name == "env":
            built.append((name, EnvBackend()))
        elif name == "local_filesystem":
            built.append((name, LocalFilesystemBackend(variables_file, connections_file)))
        else:
            built.append((name, _from_entry_point(name, all_kwargs.get(name) or {})))
    return tuple(built)


def _from_entry_point(name: str, kwargs: Mapping[str, Any]) -> SecretsBackend:
    from engine.masking import is_sensitive_key, mask_secret

    for key, value in kwargs.items():  # a token given in the table never shows in clear
        if is_sensitive_key(str(key)) and isinstance(value, str):
            mask_secret(value)
    entry = _registered().get(name)
    if entry is None:
        raise SecretsBackendError(
            f"secrets.backends: unknown backend {name!r}; allowed: {allowed_names()}"
        )
    try:
        factory = entry.load()
        backend = factory(**kwargs)
    except Exception as exc:
        raise SecretsBackendError(
            f"secrets backend {name!r} ({entry.value}) could not be created with "
            f"[secrets.backend_kwargs.{name}]: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    if not isinstance(backend, SecretsBackend):
        raise SecretsBackendError(
            f"secrets backend {name!r} ({entry.value}) is not a "
            "engine.secrets_backends.SecretsBackend"
        )
    return backend


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _ask(name: str, backend: SecretsBackend, method: str, key: str) -> tuple[bool, Any]:
    """(implemented, value) of one backend's lookup; a failure raises, naming the backend."""
    what = "variable" if method == "get_variable" else "connection"
    try:
        return True, getattr(backend, method)(key)
    except NotImplementedError:
        return False, None
    except Exception as exc:
        from engine.masking import redact

        raise SecretsBackendError(
            f"secrets backend {name!r} failed looking up {what} {key!r}: "
            f"{type(exc).__name__}: {redact(_first_line(exc))}; the later backends and the "
            "metastore were not asked (they may hold an older value)"
        ) from None


def find_variable(config: Config, key: str) -> tuple[str | None, bool, str | None]:
    """(value, mask it, backend name) from the first backend that holds `key`."""
    from engine.masking import is_sensitive_key

    for name, backend in configured(config):
        implemented, value = _ask(name, backend, "get_variable", key)
        if implemented and value is not None:
            return str(value), backend.masks_values or is_sensitive_key(key), name
    return None, False, None


def find_connection(config: Config, conn_id: str) -> Any:
    """The `Connection` from the first backend that holds `conn_id`, or None."""
    from engine.sdk.connections import Connection

    for name, backend in configured(config):
        implemented, value = _ask(name, backend, "get_connection", conn_id)
        if not implemented or value is None:
            continue
        try:
            if isinstance(value, Connection):
                return value
            if isinstance(value, str):
                return Connection.from_uri(conn_id, value)
            return Connection(conn_id, **dict(value))
        except (TypeError, ValueError) as exc:
            from engine.masking import redact

            raise SecretsBackendError(
                f"secrets backend {name!r}: connection {conn_id!r} is not valid: "
                f"{redact(_first_line(exc))}"
            ) from None
    return None
