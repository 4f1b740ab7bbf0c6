"""dagwatch: workflows as DAGs of tasks, written in Python (Airflow's authoring API)."""

from __future__ import annotations

from engine.context import get_current_context
from engine.dag import DAG, dag
from engine.decorators import task
from engine.edges import Label, chain
from engine.exceptions import SkipTask
from engine.operators import (
    BashOperator,
    BranchPythonOperator,
    EmptyOperator,
    PythonOperator,
    ShortCircuitOperator,
)
from engine.params import Param
from engine.sensors import BaseSensorOperator, PythonSensor
from engine.task_group import TaskGroup, task_group
from engine.tasks import BaseOperator
from engine.trigger_rules import TriggerRule

__version__ = "0.1.0"

__all__ = [
    "DAG",
    "BaseOperator",
    "BaseSensorOperator",
    "BashOperator",
    "BranchPythonOperator",
    "EmptyOperator",
    "Label",
    "Param",
    "PythonOperator",
    "PythonSensor",
    "ShortCircuitOperator",
    "SkipTask",
    "TaskGroup",
    "TriggerRule",
    "__version__",
    "chain",
    "dag",
    "get_current_context",
    "task",
    "task_group",
]
