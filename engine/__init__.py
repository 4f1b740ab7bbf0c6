"""dagwatch: workflows as DAGs of tasks, written in Python (Airflow's authoring API)."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name loads on first use
    # `utils`: Airflow 2's airflow.utils.dates and .decorators, reachable as engine.utils.dates
    from engine import utils as utils
    from engine.connections import BaseHook, Connection
    from engine.context import get_current_context
    from engine.cross_dag import ExternalTaskSensor, TriggerDagRunOperator
    from engine.dag import DAG, dag
    from engine.deadlines import Deadline, DeadlineReference
    from engine.decorators import setup, task, teardown
    from engine.edges import Label, chain
    from engine.exceptions import SkipTask
    from engine.operators import (
        BashOperator,
        BranchPythonOperator,
        DummyOperator,
        EmptyOperator,
        LatestOnlyOperator,
        PythonOperator,
        ShortCircuitOperator,
    )
    from engine.params import Param
    from engine.priority import PriorityWeightStrategy
    from engine.secrets import mask_secret
    from engine.sensors import (
        BaseSensorOperator,
        DateTimeSensor,
        FileSensor,
        PokeReturnValue,
        PythonSensor,
        TimeDeltaSensor,
    )
    from engine.task_group import TaskGroup, task_group
    from engine.tasks import BaseOperator, XComArg
    from engine.trigger_rules import TriggerRule
    from engine.variables import Variable

# exported name -> module defining it: `import engine` stays cheap (the CLI starts at once),
# and `from engine import DAG` imports what DAG needs when it is asked for.
_EXPORTS: dict[str, str] = {
    "utils": "engine.utils",
    "BaseHook": "engine.connections",
    "Connection": "engine.connections",
    "get_current_context": "engine.context",
    "ExternalTaskSensor": "engine.cross_dag",
    "TriggerDagRunOperator": "engine.cross_dag",
    "DAG": "engine.dag",
    "dag": "engine.dag",
    "Deadline": "engine.deadlines",
    "DeadlineReference": "engine.deadlines",
    "setup": "engine.decorators",
    "task": "engine.decorators",
    "teardown": "engine.decorators",
    "Label": "engine.edges",
    "chain": "engine.edges",
    "SkipTask": "engine.exceptions",
    "BashOperator": "engine.operators",
    "BranchPythonOperator": "engine.operators",
    "DummyOperator": "engine.operators",
    "EmptyOperator": "engine.operators",
    "LatestOnlyOperator": "engine.operators",
    "PythonOperator": "engine.operators",
    "ShortCircuitOperator": "engine.operators",
    "Param": "engine.params",
    "PriorityWeightStrategy": "engine.priority",
    "mask_secret": "engine.secrets",
    "BaseSensorOperator": "engine.sensors",
    "DateTimeSensor": "engine.sensors",
    "FileSensor": "engine.sensors",
    "PokeReturnValue": "engine.sensors",
    "PythonSensor": "engine.sensors",
    "TimeDeltaSensor": "engine.sensors",
    "TaskGroup": "engine.task_group",
    "task_group": "engine.task_group",
    "BaseOperator": "engine.tasks",
    "XComArg": "engine.tasks",
    "TriggerRule": "engine.trigger_rules",
    "Variable": "engine.variables",
}

__version__ = "0.1.0"

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
    "__version__",
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
    """Keeps `engine.dag` and `engine.task_group` the exported functions, as they were when
    this package imported them eagerly: importing the submodule of the same name later
    binds the package attribute to the module, which this puts right."""

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            isinstance(value, types.ModuleType)
            and value.__name__ == f"engine.{name}"
            and _EXPORTS.get(name) == value.__name__
            and hasattr(value, name)
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    if name in globals():  # a submodule (`utils`), bound as the import finished
        return globals()[name]
    value = getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
