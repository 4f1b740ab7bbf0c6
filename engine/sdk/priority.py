"""Custom priority weight strategies (Airflow 3's `PriorityWeightStrategy`).

A strategy class is registered by a plugin: a module named in the `dagwatch.plugins`
entry-point group lists it in `priority_weight_strategies` (Airflow's plugin attribute).
A task names it with `weight_rule=` (an instance, or the class's dotted path). Its weight
is computed when the DAG file is parsed and stored with the serialized DAG, so the
scheduler still never imports user code; the task instance handed to `get_weight` is
the task before its first try (`try_number` 0, `map_index` -1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.exceptions import DagDefinitionError

if TYPE_CHECKING:
    from engine.sdk.tasks import BaseOperator

log = logging.getLogger(__name__)

#: Airflow's built-in rules, by name.
BUILTIN_RULES = ("downstream", "upstream", "absolute")

_registered: dict[str, type] | None = None


class PriorityWeightStrategy:
    """Base of custom strategies: implement `get_weight(ti) -> int`."""

    def get_weight(self, ti: Any) -> int:
        raise NotImplementedError(f"{type(self).__name__} must implement get_weight(self, ti)")

    def serialize(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this strategy (none by default)."""
        return {}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> PriorityWeightStrategy:
        return cls(**data)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.serialize() == self.serialize()

    def __hash__(self) -> int:
        return hash((type(self), repr(sorted(self.serialize().items()))))


def strategy_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def registered_strategies() -> dict[str, type]:
    """The strategy classes the installed plugins register, by dotted path (read once)."""
    global _registered
    if _registered is None:
        from engine import hooks

        found: dict[str, type] = {}
        for name, entry in sorted(hooks.discover().items()):
            try:
                plugin = entry.load()
            except Exception as exc:  # a broken plugin is reported, never fatal here
                log.error("plugin %s could not be loaded: %s", name, exc)
                continue
            for cls in getattr(plugin, "priority_weight_strategies", None) or ():
                if isinstance(cls, type) and issubclass(cls, PriorityWeightStrategy):
                    found[strategy_path(cls)] = cls
                else:
                    log.error("plugin %s: %r is not a PriorityWeightStrategy subclass", name, cls)
        _registered = found
    return _registered


def register_priority_weight_strategy(cls: type) -> type:
    """Register a strategy class in this process (what a plugin's list does); returns it."""
    if not (isinstance(cls, type) and issubclass(cls, PriorityWeightStrategy)):
        raise TypeError(f"{cls!r} is not a PriorityWeightStrategy subclass")
    registered_strategies()[strategy_path(cls)] = cls
    return cls


def resolve_weight_rule(value: Any, task_id: str) -> tuple[str, PriorityWeightStrategy | None]:
    """(the rule's name, the custom strategy or None) for a task's `weight_rule=`."""
    if isinstance(value, str) and value in BUILTIN_RULES:
        return value, None
    registered = registered_strategies()
    if isinstance(value, PriorityWeightStrategy):
        path = strategy_path(type(value))
        strategy: PriorityWeightStrategy | None = value
    elif isinstance(value, str):
        path, strategy = value, None
    else:
        path, strategy = repr(value), None
    if path not in registered:
        known = ", ".join([*BUILTIN_RULES, *sorted(registered)])
        raise DagDefinitionError(
            f"task {task_id!r}: weight_rule {path!r} is invalid: neither a built-in rule nor "
            "a PriorityWeightStrategy a plugin registers (priority_weight_strategies); "
            f"allowed: {known}"
        )
    if strategy is None:
        strategy = registered[path]()
    return path, strategy


@dataclass
class ParseTimeTaskInstance:
    """What `get_weight(ti)` sees at parse time: the task before its first try."""

    task: BaseOperator
    try_number: int = 0
    map_index: int = -1

    @property
    def task_id(self) -> str:
        return self.task.task_id

    @property
    def dag_id(self) -> str | None:
        return self.task.dag_id


def strategy_weight(strategy: PriorityWeightStrategy, task: BaseOperator) -> int:
    """The strategy's weight for `task`, checked to be an int."""
    weight = strategy.get_weight(ParseTimeTaskInstance(task))
    if not isinstance(weight, int) or isinstance(weight, bool):
        raise DagDefinitionError(
            f"task {task.task_id!r}: {type(strategy).__name__}.get_weight() returned "
            f"{weight!r}, not an int"
        )
    return weight
