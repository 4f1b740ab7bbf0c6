"""`Connection` and `BaseHook`: how DAGs reach external systems, with Airflow's API.

A connection is looked up in the environment first (`DAGWATCH_CONN_<ID>`, a URI or a JSON
object), then in the metastore. Its password, and extra values under sensitive keys, are
registered with the secrets masker as soon as they are read.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from engine.config import MASK
from engine.exceptions import NotFound
from engine.masking import is_sensitive_key, mask_secret
from engine.sdk.compat import LoggingMixin

ENV_PREFIX = "DAGWATCH_CONN_"
_FIELDS = ("conn_type", "host", "schema", "login", "password", "port", "extra", "description")


def _parse_extra(extra: Mapping[str, Any] | str | None) -> dict[str, Any]:
    if extra is None or extra == "":
        return {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError as exc:
            raise ValueError(f"extra is not valid JSON: {exc}") from None
    if not isinstance(extra, Mapping):
        raise ValueError(f"extra must be a JSON object, not {type(extra).__name__}")
    return dict(extra)


def _parse_port(port: Any) -> int | None:
    if port is None or port == "":
        return None
    if isinstance(port, bool):
        raise ValueError(f"port must be an integer, not {port!r}")
    try:
        return int(port)
    except (TypeError, ValueError):
        raise ValueError(f"port must be an integer, not {port!r}") from None


def _normalize_conn_type(conn_type: str) -> str:
    """Airflow's rule: postgresql:// means postgres, and dashes in schemes become _."""
    if conn_type == "postgresql":
        return "postgres"
    return conn_type.replace("-", "_")


def _hostname(parts: Any) -> str:
    """The host of a split URI, keeping a host that itself contains '/' (Airflow's rule)."""
    hostname = unquote(parts.hostname or "")
    if "/" in hostname:
        hostname = parts.netloc.rsplit("@", 1)[-1].split(":", 1)[0]
        hostname = unquote(hostname)
    return hostname


def mask_extra(extra: Any) -> Any:
    """A copy of `extra` with the values under sensitive keys replaced by ***."""
    if isinstance(extra, Mapping):
        return {
            key: MASK
            if is_sensitive_key(str(key)) and value not in (None, "")
            else mask_extra(value)
            for key, value in extra.items()
        }
    if isinstance(extra, list):
        return [mask_extra(item) for item in extra]
    return extra


class Connection:
    """Where and how to reach an external system (host, credentials, extra options)."""

    EXTRA_KEY = "__extra__"

    def __init__(
        self,
        conn_id: str,
        conn_type: str | None = None,
        description: str | None = None,
        host: str | None = None,
        login: str | None = None,
        password: str | None = None,
        schema: str | None = None,
        port: int | str | None = None,
        extra: Mapping[str, Any] | str | None = None,
        uri: str | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.description = description
        if uri is not None:
            if any(v is not None for v in (conn_type, host, login, password, schema, port, extra)):
                raise ValueError("give a connection either as uri or as fields, not both")
            self._parse_from_uri(uri)
            return
        self.conn_type = conn_type
        self.host = host or None
        self.login = login
        self.password = password
        self.schema = schema or None
        self.port = _parse_port(port)
        self.extra: dict[str, Any] = _parse_extra(extra)

    def _parse_from_uri(self, uri: str) -> None:
        """Airflow's URI format: type://login:password@host:port/schema?extra=..."""
        schemes = uri.count("://")
        if schemes not in (1, 2):
            raise ValueError(f"invalid connection URI {_mask_uri(uri)!r}: expected type://...")
        scheme = urlsplit(uri).scheme
        if not scheme:
            raise ValueError(f"invalid connection URI {_mask_uri(uri)!r}: no connection type")
        self.conn_type = _normalize_conn_type(scheme)
        host_with_protocol = schemes == 2
        rest = uri.replace(f"{scheme}://", "" if host_with_protocol else "//", 1)
        if host_with_protocol:
            protocol_part = rest.split("://", 1)[0]
            if "@" in protocol_part or ":" in protocol_part:
                raise ValueError(f"invalid connection URI {_mask_uri(uri)!r}")
        parts = urlsplit(rest)
        host = _hostname(parts)
        protocol = parts.scheme if host_with_protocol else ""
        self.host = (f"{protocol}://{host}" if protocol else host) or None
        self.schema = unquote(parts.path[1:]) if parts.path[1:] else None
        self.login = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        try:
            self.port = parts.port
        except ValueError:
            raise ValueError(
                f"invalid connection URI {_mask_uri(uri)!r}: the port is not a number"
            ) from None
        self.extra = {}
        if parts.query:
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            self.extra = _parse_extra(query[self.EXTRA_KEY]) if self.EXTRA_KEY in query else query

    @classmethod
    def from_uri(cls, conn_id: str, uri: str, description: str | None = None) -> Connection:
        """Parse an Airflow-style connection URI."""
        return cls(conn_id, description=description, uri=uri)

    def get_uri(self) -> str:
        """The connection as a URI that `from_uri` parses back to the same fields."""
        uri = f"{self.conn_type.lower().replace('_', '-')}://" if self.conn_type else "//"
        protocol, host = (
            (self.host.split("://", 1)) if self.host and "://" in self.host else ("", self.host)
        )
        if protocol:
            uri += f"{protocol}://"
        authority = ""
        if self.login is not None:
            authority += quote(self.login, safe="")
        if self.password is not None:
            authority += ":" + quote(self.password, safe="")
        if authority:
            uri += authority + "@"
        host_block = quote(host, safe="") if host else ""
        if self.port:
            host_block += f"@:{self.port}" if not host_block and not authority else f":{self.port}"
        if self.schema:
            host_block += f"/{quote(self.schema, safe='')}"
        uri += host_block
        if self.extra:
            try:
                query: str | None = urlencode(self.extra)
            except TypeError:
                query = None
            if not (query and self.extra == dict(parse_qsl(query, keep_blank_values=True))):
                query = urlencode({self.EXTRA_KEY: json.dumps(self.extra)})
            uri += ("?" if self.schema else "/?") + query
        return uri

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """The extra options as a dict (a copy)."""
        extra: dict[str, Any] = json.loads(json.dumps(self.extra))
        return extra

    def to_dict(self, *, masked: bool = True) -> dict[str, Any]:
        """The fields, with the password and sensitive extra values masked unless told not to."""
        password = MASK if masked and self.password else self.password
        return {
            "conn_id": self.conn_id,
            "conn_type": self.conn_type,
            "host": self.host,
            "schema": self.schema,
            "login": self.login,
            "password": password,
            "port": self.port,
            "extra": mask_extra(self.extra) if masked else self.extra_dejson,
            "description": self.description,
        }

    def mask_secrets(self) -> None:
        """Register the password and sensitive extra values with the secrets masker."""
        if self.password:
            mask_secret(self.password)
            mask_secret(quote(self.password, safe=""))
        _mask_sensitive_extra(self.extra)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Connection):
            return NotImplemented
        return self.to_dict(masked=False) == other.to_dict(masked=False)

    def __repr__(self) -> str:
        fields = f"conn_id={self.conn_id!r}, conn_type={self.conn_type!r}, host={self.host!r}"
        return f"Connection({fields})"

    @classmethod
    def from_env(cls, conn_id: str) -> Connection | None:
        """`DAGWATCH_CONN_<ID>`: a URI, or a JSON object of the fields."""
        raw = os.environ.get(f"{ENV_PREFIX}{conn_id.upper()}")
        return None if raw is None else cls.from_env_value(conn_id, raw)

    @classmethod
    def from_env_value(cls, conn_id: str, raw: str) -> Connection:
        """The connection a `DAGWATCH_CONN_<ID>` value describes (a URI or a JSON object)."""
        if raw.lstrip().startswith("{"):
            fields = json.loads(raw)
            unknown = sorted(set(fields) - set(_FIELDS))
            if unknown:
                raise ValueError(
                    f"{ENV_PREFIX}{conn_id.upper()}: unknown field(s) {', '.join(unknown)}"
                )
            return cls(conn_id, **fields)
        return cls.from_uri(conn_id, raw)

    @classmethod
    def get(cls, conn_id: str) -> Connection:
        """The connection from the secrets backends (`secrets.backends`: the environment by
        default), else the metastore; NotFound when none has it."""
        from engine.sdk import task_api

        connection = task_api.current().get_connection(conn_id)
        if connection is None:
            raise NotFound(f"Connection {conn_id!r} does not exist")
        connection.mask_secrets()
        return connection

    get_connection_from_secrets = get


def _mask_sensitive_extra(extra: Any) -> None:
    if isinstance(extra, Mapping):
        for key, value in extra.items():
            if is_sensitive_key(str(key)) and isinstance(value, str):
                mask_secret(value)
            else:
                _mask_sensitive_extra(value)
    elif isinstance(extra, list):
        for item in extra:
            _mask_sensitive_extra(item)


def _mask_uri(uri: str) -> str:
    """A URI with its password hidden, for error messages."""
    scheme, sep, rest = uri.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return uri
    return f"{scheme}://{credentials.split(':', 1)[0]}:{MASK}@{location}"


class BaseHook(LoggingMixin):
    """Base class of hooks: subclass it and name your connection attribute and default."""

    conn_name_attr: ClassVar[str] = "conn_id"
    default_conn_name: ClassVar[str] = "default_conn_id"
    conn_type: ClassVar[str] = ""
    hook_name: ClassVar[str] = ""

    def __init__(self, logger_name: str | None = None) -> None:
        self._log = logging.getLogger(
            logger_name or f"{type(self).__module__}.{type(self).__name__}"
        )

    @classmethod
    def get_connection(cls, conn_id: str) -> Connection:
        """The connection `conn_id` (environment first, then the metastore)."""
        return Connection.get(conn_id)

    def get_conn(self) -> Any:
        """A client for the external system; hooks implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement get_conn()")
