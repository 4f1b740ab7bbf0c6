"""The authoring API: everything a DAG file imports (`from engine import DAG, task` re-exports it).

Like Airflow 3's Task SDK, this package knows nothing of the scheduler, the executors, the
DAG processor or the metastore: what a task reads or writes at run time goes through
`engine.sdk.task_api`."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name loads on first use
    from engine.exceptions import SkipTask
    from engine.masking import mask_secret
    from engine.sdk.connections import BaseHook, Connection
    from engine.sdk.context import get_current_context
    from engine.sdk.cross_dag import ExternalTaskSensor, TriggerDagRunOperator
    from engine.sdk.dag import DAG, dag
    from engine.sdk.deadlines import Deadline, DeadlineReference
    from engine.sdk.decorators import setup, task, teardown
    from engine.sdk.edges import Label, chain
    from engine.sdk.operators import (
        BashOperator,
        BranchPythonOperator,
        DummyOperator,
        EmptyOperator,
        LatestOnlyOperator,
        PythonOperator,
        ShortCircuitOperator,
    )
    from engine.sdk.params import Param
    from engine.sdk.priority import PriorityWeightStrategy
    from engine.sdk.sensors import (
        BaseSensorOperator,
        DateTimeSensor,
        FileSensor,
        PokeReturnValue,
        PythonSensor,
        TimeDeltaSensor,
    )
    from engine.sdk.task_group import TaskGroup, task_group
    from engine.sdk.tasks import BaseOperator, XComArg
    from engine.sdk.trigger_rules import TriggerRule
    from engine.sdk.variables import Variable

# exported name -> module defining it: `import engine` stays cheap (the CLI starts at once),
# and `from engine import DAG` imports what DAG needs when it is asked for.
_EXPORTS: dict[str, str] = {
    "BaseHook": "engine.sdk.connections",
    "Connection": "engine.sdk.connections",
    "get_current_context": "engine.sdk.context",
    "ExternalTaskSensor": "engine.sdk.cross_dag",
    "TriggerDagRunOperator": "engine.sdk.cross_dag",
    "DAG": "engine.sdk.dag",
    "dag": "engine.sdk.dag",
    "Deadline": "engine.sdk.deadlines",
    "DeadlineReference": "engine.sdk.deadlines",
    "setup": "engine.sdk.decorators",
    "task": "engine.sdk.decorators",
    "teardown": "engine.sdk.decorators",
    "Label": "engine.sdk.edges",
    "chain": "engine.sdk.edges",
    "SkipTask": "engine.exceptions",
    "BashOperator": "engine.sdk.operators",
    "BranchPythonOperator": "engine.sdk.operators",
    "DummyOperator": "engine.sdk.operators",
    "EmptyOperator": "engine.sdk.operators",
    "LatestOnlyOperator": "engine.sdk.operators",
    "PythonOperator": "engine.sdk.operators",
    "ShortCircuitOperator": "engine.sdk.operators",
    "Param": "engine.sdk.params",
    "PriorityWeightStrategy": "engine.sdk.priority",
    "mask_secret": "engine.masking",
    "BaseSensorOperator": "engine.sdk.sensors",
    "DateTimeSensor": "engine.sdk.sensors",
    "FileSensor": "engine.sdk.sensors",
    "PokeReturnValue": "engine.sdk.sensors",
    "PythonSensor": "engine.sdk.sensors",
    "TimeDeltaSensor": "engine.sdk.sensors",
    "TaskGroup": "engine.sdk.task_group",
    "task_group": "engine.sdk.task_group",
    "BaseOperator": "engine.sdk.tasks",
    "XComArg": "engine.sdk.tasks",
    "TriggerRule": "engine.sdk.trigger_rules",
    "Variable": "engine.sdk.variables",
}

__all__ = [
    "DAG",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "BashOperator",
    "BranchPythonOperator",
    "Connection",
    "DateTimeSensor",
    "Deadline",
    "DeadlineReference",
    "DummyOperator",
    "EmptyOperator",
    "ExternalTaskSensor",
    "FileSensor",
    "Label",
    "LatestOnlyOperator",
    "Param",
    "PokeReturnValue",
    "PriorityWeightStrategy",
    "PythonOperator",
    "PythonSensor",
    "ShortCircuitOperator",
    "SkipTask",
    "TaskGroup",
    "TimeDeltaSensor",
    "TriggerDagRunOperator",
    "TriggerRule",
    "Variable",
    "XComArg",
    "chain",
    "dag",
    "get_current_context",
    "mask_secret",
    "setup",
    "task",
    "task_group",
    "teardown",
]


class _Package(types.ModuleType):
    """Keeps `engine.sdk.dag` and `engine.sdk.task_group` the exported functions, as they were when
    this package imported them eagerly: importing the submodule of the same name later
    binds the package attribute to the module, which this puts right."""

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            isinstance(value, types.ModuleType)
            and value.__name__ == f"engine.sdk.{name}"
            and _EXPORTS.get(name) == value.__name__
            and hasattr(value, name)
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.sdk' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
