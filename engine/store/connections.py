"""Connections in the metastore; the password and the extra are stored Fernet-encrypted."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from engine.config import Config
from engine.exceptions import StoreError
from engine.secrets import decrypt_token, encrypt, get_fernet
from engine.store.db import affected_rows
from engine.store.models import Connection as ConnectionRow


@dataclass(frozen=True)
class ConnectionRecord:
    """A stored connection, decrypted: the fields `engine.sdk.connections.Connection` takes
    (`Connection(**dataclasses.asdict(record))`); `extra` is its JSON text."""

    conn_id: str
    conn_type: str | None
    description: str | None
    host: str | None
    login: str | None
    password: str | None
    schema: str | None
    port: int | None
    extra: str | None


class ConnectionFields(Protocol):
    """What `add_connection` stores (an `engine.sdk.connections.Connection` has it)."""

    @property
    def conn_id(self) -> str: ...

    @property
    def conn_type(self) -> str | None: ...

    @property
    def description(self) -> str | None: ...

    @property
    def host(self) -> str | None: ...

    @property
    def login(self) -> str | None: ...

    @property
    def password(self) -> str | None: ...

    @property
    def schema(self) -> str | None: ...

    @property
    def port(self) -> int | None: ...

    @property
    def extra(self) -> Mapping[str, Any]: ...


def _to_record(row: ConnectionRow, config: Config) -> ConnectionRecord:
    fernet = get_fernet(config)
    what = f"connection {row.conn_id!r}"
    password = None if row.password is None else decrypt_token(fernet, row.password, what)
    extra = None if row.extra is None else decrypt_token(fernet, row.extra, what)
    return ConnectionRecord(
        row.conn_id,
        conn_type=row.conn_type,
        description=row.description,
        host=row.host,
        login=row.login,
        password=password,
        schema=row.schema,
        port=row.port,
        extra=extra,
    )


def get_connection(session: Session, conn_id: str, *, config: Config) -> ConnectionRecord | None:
    """The connection with its secrets decrypted, or None."""
    row = session.get(ConnectionRow, conn_id)
    return None if row is None else _to_record(row, config)


def add_connection(
    session: Session, connection: ConnectionFields, *, config: Config, replace: bool = False
) -> None:
    """Store a connection; an existing conn_id is an error unless `replace`."""
    if not connection.conn_id or not connection.conn_id.strip():
        raise StoreError("a connection needs a non-empty conn_id")
    if not connection.conn_type:
        raise StoreError(f"connection {connection.conn_id!r} needs a conn_type")
    row = session.get(ConnectionRow, connection.conn_id)
    if row is not None and not replace:
        raise StoreError(f"connection {connection.conn_id!r} already exists")
    if row is None:
        row = ConnectionRow(conn_id=connection.conn_id)
        session.add(row)
    row.conn_type = connection.conn_type
    row.host = connection.host
    row.schema = connection.schema
    row.login = connection.login
    row.port = connection.port
    row.description = connection.description
    row.password = None if connection.password is None else encrypt(config, connection.password)
    row.extra = encrypt(config, json.dumps(connection.extra)) if connection.extra else None
    session.flush()


def delete_connection(session: Session, conn_id: str) -> bool:
    """Delete a connection; False when there was none."""
    result = session.execute(delete(ConnectionRow).where(ConnectionRow.conn_id == conn_id))
    return bool(affected_rows(result))


def list_connections(session: Session, *, config: Config) -> list[ConnectionRecord]:
    """Every connection, decrypted, ordered by conn_id."""
    rows = session.scalars(select(ConnectionRow).order_by(ConnectionRow.conn_id))
    return [_to_record(row, config) for row in rows]
