"""dagwatch: workflows as DAGs of tasks, written in Python (Airflow's authoring API).

`from engine import DAG, task` is the authoring API of `engine.sdk`, re-exported here and
loaded on first use, so `import engine` stays cheap (the CLI starts at once). The engine's
parts live in subpackages: `sdk` (what DAG files import), `parsing` (the DAG processor),
`scheduling` (the scheduler loop), `execution` (the task runner and the executors), `store`
(the metastore: every SQL statement of the engine), `cli`, `observability` and `api`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.sdk import *  # noqa: F403

__version__ = "0.1.0"

if TYPE_CHECKING:
    from engine.sdk.task_api import TaskAPI


def default_task_api() -> TaskAPI:
    """The task API a process gets unless it installs another: the metastore this process
    is configured with (`engine.runtime`), secrets backends first."""
    from engine.execution.task_api import MetastoreTaskAPI

    return MetastoreTaskAPI()


def __getattr__(name: str) -> Any:
    sdk = importlib.import_module("engine.sdk")
    if name == "__all__":
        return [*sdk.__all__, "__version__"]
    if name == "utils":  # Airflow 2's airflow.utils.dates and .decorators, as engine.utils.dates
        return importlib.import_module("engine.utils")
    if name not in sdk._EXPORTS:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(sdk, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    sdk = importlib.import_module("engine.sdk")
    return sorted(set(globals()) | set(sdk._EXPORTS))
