"""DAG params: named run inputs with defaults and a JSON Schema each.

A run's conf is merged over the defaults and every value is validated before the run
starts, so a bad input fails at trigger time, not halfway through the run.
jsonschema is imported on first validation to keep `import engine` fast.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from engine.exceptions import ParamValidationError


class _NotSet:
    """Marker for "no value" where None is a legitimate value."""

    _instance: _NotSet | None = None

    def __new__(cls) -> _NotSet:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOTSET"

    def __bool__(self) -> bool:
        return False

    def __copy__(self) -> _NotSet:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _NotSet:
        return self


NOTSET: Any = _NotSet()


def _schema_error(value: Any, schema: dict[str, Any]) -> str | None:
    """The first JSON Schema error of `value`, or None when it is valid."""
    if not schema:
        return None
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    try:
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"invalid schema: {exc.message}"
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    return None if error is None else error.message


class Param:
    """A param's default value, description and JSON Schema (any keyword, e.g. type, enum)."""

    def __init__(self, default: Any = NOTSET, description: str | None = None, **schema: Any):
        self.value = default
        self.description = description
        self.schema = schema

    def __repr__(self) -> str:
        return f"Param({self.value!r}, schema={self.schema!r})"

    @property
    def has_value(self) -> bool:
        return self.value is not NOTSET

    def resolve(self, value: Any = NOTSET, *, name: str = "") -> Any:
        """The validated value: `value` if given, else the default."""
        label = f"param {name!r}" if name else "param"
        final = self.value if value is NOTSET else value
        if final is NOTSET:
            raise ParamValidationError(
                f"{label} is required: it has no default and the run's conf does not set it"
            )
        error = _schema_error(final, self.schema)
        if error is not None:
            raise ParamValidationError(
                f"{label}: value {final!r} is not valid: {error} (schema: {self.schema})"
            )
        return final

    def dump(self) -> dict[str, Any]:
        """JSON-compatible description (the default is None when there is none)."""
        return {
            "default": None if self.value is NOTSET else self.value,
            "has_default": self.value is not NOTSET,
            "description": self.description,
            "schema": self.schema,
        }

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Param:
        default = data.get("default") if data.get("has_default", True) else NOTSET
        return cls(default, data.get("description"), **dict(data.get("schema") or {}))


class ParamsDict(MutableMapping[str, Param]):
    """name -> Param; plain values are wrapped in `Param(value)` (keeping an existing schema)."""

    def __init__(self, params: Mapping[str, Any] | None = None):
        self._params: dict[str, Param] = {}
        for name, value in (params or {}).items():
            self[name] = value

    def __setitem__(self, name: str, value: Any) -> None:
        if isinstance(value, Param):
            self._params[name] = value
        elif name in self._params:
            old = self._params[name]
            self._params[name] = Param(value, old.description, **old.schema)
        else:
            self._params[name] = Param(value)

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __delitem__(self, name: str) -> None:
        del self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __repr__(self) -> str:
        return f"ParamsDict({self._params!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> ParamsDict:
        new = ParamsDict()
        new._params = {k: copy.deepcopy(v, memo) for k, v in self._params.items()}
        return new

    def copy(self) -> ParamsDict:
        new = ParamsDict()
        new._params = dict(self._params)
        return new

    def defaults(self) -> dict[str, Any]:
        """name -> default value, for params that have one (no validation)."""
        return {name: p.value for name, p in self._params.items() if p.has_value}

    def validate(self) -> None:
        """Check every default against its schema (params without a default are skipped)."""
        for name, param in self._params.items():
            if param.has_value:
                param.resolve(name=name)

    def resolve(self, conf: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Merge a run's conf over the defaults and validate each param.

        Keys of `conf` that are not params pass through unvalidated, as in Airflow.
        """
        conf = dict(conf or {})
        resolved = {
            name: param.resolve(conf.pop(name, NOTSET), name=name)
            for name, param in self._params.items()
        }
        resolved.update(conf)
        return resolved

    def dump(self, owner: str = "") -> dict[str, dict[str, Any]]:
        """JSON-compatible form; a default that JSON cannot hold is an error naming it."""
        dumped = {}
        for name, param in self._params.items():
            data = param.dump()
            try:
                json.dumps(data)
            except (TypeError, ValueError) as exc:
                where = f" of {owner}" if owner else ""
                raise ParamValidationError(
                    f"param {name!r}{where} is not JSON-serializable ({exc}); "
                    "use str, int, float, bool, None, list or dict values"
                ) from None
            dumped[name] = data
        return dumped

    @classmethod
    def load(cls, data: Mapping[str, Mapping[str, Any]]) -> ParamsDict:
        return cls({name: Param.load(item) for name, item in data.items()})


class DagParam:
    """A placeholder for a DAG param's run-time value (what `@dag` passes to its function).

    Resolved from `context["params"]` when the task runs, like an XComArg.
    """

    def __init__(self, name: str, default: Any = NOTSET):
        self.name = name
        self.default = default

    def __repr__(self) -> str:
        return f"DagParam({self.name!r})"

    def __str__(self) -> str:
        return "{{ params[%r] }}" % self.name  # noqa: UP031 - braces make f-strings unreadable

    def resolve(self, context: Mapping[str, Any]) -> Any:
        params = context.get("params") or {}
        if self.name in params:
            return params[self.name]
        if self.default is not NOTSET:
            return self.default
        raise ParamValidationError(f"param {self.name!r} has no value in this run")
