"""Variables in the metastore; values are stored Fernet-encrypted, never in plain text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from engine.config import MASK, Config
from engine.exceptions import StoreError
from engine.secrets import decrypt_token, encrypt, get_fernet
from engine.store.db import affected_rows
from engine.store.models import Connection as ConnectionRow
from engine.store.models import Variable as VariableRow


@dataclass(frozen=True)
class VariableRecord:
    """A variable with its value decrypted."""

    key: str
    value: str
    is_secret: bool
    description: str | None

    def as_row(self, *, masked: bool = True) -> dict[str, object]:
        """For listings: the value of a secret variable shows as *** unless `masked=False`."""
        value = MASK if masked and self.is_secret else self.value
        return {
            "key": self.key,
            "value": value,
            "is_secret": self.is_secret,
            "description": self.description,
        }


def get_variable_row(session: Session, key: str) -> VariableRow | None:
    """The stored (encrypted) row, or None."""
    return session.get(VariableRow, key)


def get_variable(session: Session, key: str, *, config: Config) -> VariableRecord | None:
    """The variable with its value decrypted, or None when there is no such key."""
    row = get_variable_row(session, key)
    return None if row is None else _record(row, config)


def _record(row: VariableRow, config: Config) -> VariableRecord:
    value = decrypt_token(get_fernet(config), row.val, f"variable {row.key!r}")
    return VariableRecord(row.key, value, bool(row.is_secret), row.description)


def set_variable(
    session: Session,
    key: str,
    value: str,
    *,
    description: str | None = None,
    is_secret: bool = False,
    config: Config,
) -> None:
    """Create or replace a variable (a None description keeps the existing one)."""
    if not key or not key.strip():
        raise StoreError("a variable needs a non-empty key")
    if not isinstance(value, str):
        raise StoreError(
            f"variable {key!r}: the value must be a string, not {type(value).__name__}"
        )
    token = encrypt(config, value)
    row = get_variable_row(session, key)
    if row is None:
        session.add(VariableRow(key=key, val=token, is_secret=is_secret, description=description))
    else:
        row.val, row.is_secret = token, is_secret
        if description is not None:
            row.description = description
    session.flush()


def delete_variable(session: Session, key: str) -> bool:
    """Delete a variable; False when there was none."""
    result = session.execute(delete(VariableRow).where(VariableRow.key == key))
    return bool(affected_rows(result))


def list_variables(session: Session, *, config: Config) -> list[VariableRecord]:
    """Every variable, decrypted, ordered by key."""
    rows = list(session.scalars(select(VariableRow).order_by(VariableRow.key)))
    if not rows:  # no key needed (and none generated) for an empty listing
        return []
    fernet = get_fernet(config)
    return [
        VariableRecord(
            row.key,
            decrypt_token(fernet, row.val, f"variable {row.key!r}"),
            bool(row.is_secret),
            row.description,
        )
        for row in rows
    ]


def reencrypt_all(session: Session, rotate: Callable[[bytes, str], bytes]) -> int:
    """Pass every encrypted value of variables and connections through `rotate(token,
    what)` (which re-encrypts it with the first key); returns the rows changed."""
    count = 0
    for variable in session.scalars(select(VariableRow)):
        variable.val = rotate(variable.val, f"variable {variable.key!r}")
        count += 1
    for connection in session.scalars(select(ConnectionRow)):
        what = f"connection {connection.conn_id!r}"
        if connection.password is not None:
            connection.password = rotate(connection.password, what)
        if connection.extra is not None:
            connection.extra = rotate(connection.extra, what)
        count += 1
    return count
