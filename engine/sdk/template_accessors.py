"""Template helpers `{{ var.value.key }}`, `{{ var.json.key }}` and `{{ conn.my_conn.host }}`."""

from __future__ import annotations

from typing import Any


class _VariableValues:
    def __init__(self, deserialize_json: bool) -> None:
        self._json = deserialize_json

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        return self.get(key)

    def get(self, key: str, default: Any = None) -> Any:
        from engine.sdk.variables import Variable

        return Variable.get(key, default, deserialize_json=self._json)


class VariableAccessor:
    """`var` in templates: `var.value.name` (text) and `var.json.name` (decoded JSON)."""

    def __init__(self) -> None:
        self.value = _VariableValues(deserialize_json=False)
        self.json = _VariableValues(deserialize_json=True)


class ConnectionAccessor:
    """`conn` in templates: `conn.<conn_id>` is the Connection."""

    def __getattr__(self, conn_id: str) -> Any:
        if conn_id.startswith("__"):
            raise AttributeError(conn_id)
        return self.get(conn_id)

    def get(self, conn_id: str) -> Any:
        from engine.sdk.connections import Connection

        return Connection.get(conn_id)
