"""dagwatch: workflows as DAGs of tasks, written in Python (Airflow's authoring API)."""

from __future__ import annotations

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
