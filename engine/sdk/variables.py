"""`Variable`: Airflow's API for key/value settings, read from the secrets backends, then
the metastore.

The backends of `secrets.backends` are asked first, in order (`engine.secrets_backends`);
by default that is the environment: `DAGWATCH_VAR_<KEY>` wins over the metastore, so a
deployment can pin a value without writing to the database.
"""

from __future__ import annotations

import json
from typing import Any

from engine.exceptions import NotFound
from engine.masking import is_sensitive_key, mask_secret
from engine.sdk import task_api

ENV_PREFIX = "DAGWATCH_VAR_"
_MISSING: Any = object()


class Variable:
    """Read and write variables the way Airflow DAGs do: `Variable.get("key")`."""

    @classmethod
    def get(cls, key: str, default_var: Any = _MISSING, deserialize_json: bool = False) -> Any:
        """The value of `key`; `default_var` when missing, else NotFound."""
        value, is_secret = cls._lookup(key)
        if value is None:
            if default_var is _MISSING:
                raise NotFound(f"Variable {key!r} does not exist")
            return default_var
        if is_secret:
            mask_secret(value)
        return json.loads(value) if deserialize_json else value

    @staticmethod
    def _lookup(key: str) -> tuple[str | None, bool]:
        found = task_api.current().get_variable(key)
        return (None, False) if found is None else (found.value, found.is_secret)

    @classmethod
    def set(
        cls,
        key: str,
        value: Any,
        description: str | None = None,
        serialize_json: bool = False,
        is_secret: bool | None = None,
    ) -> None:
        """Store `value` (JSON-encoded when `serialize_json`); secret if the key looks so."""
        text = json.dumps(value, indent=2) if serialize_json else str(value)
        secret = is_sensitive_key(key) if is_secret is None else is_secret
        task_api.current().set_variable(key, text, description=description, is_secret=secret)

    @classmethod
    def delete(cls, key: str) -> int:
        """Delete `key` from the metastore; returns how many were deleted (0 or 1)."""
        return task_api.current().delete_variable(key)
