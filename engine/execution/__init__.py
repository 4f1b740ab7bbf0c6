"""Execution: the task runner (one attempt) and the executors that run attempts out of the
scheduler's way (`sequential`, `local/`, `celery/`); `get_executor` picks one by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.exceptions import ConfigError
from engine.execution.base import (
    AttemptEvent,
    AttemptRequest,
    CallbackRequest,
    Executor,
)

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.db import Store

EXECUTORS = ("sequential", "local", "celery")

__all__ = [
    "EXECUTORS",
    "AttemptEvent",
    "AttemptRequest",
    "CallbackRequest",
    "Executor",
    "get_executor",
]


def get_executor(name: str, config: Config, store: Store) -> Executor:
    """The executor called `name` (`core.executor`), not yet started."""
    if name == "sequential":
        from engine.execution.sequential import SequentialExecutor

        return SequentialExecutor(config, store)
    if name == "local":
        from engine.execution.local import LocalExecutor

        return LocalExecutor(config)
    if name == "celery":
        from engine.execution.celery import CeleryExecutor

        return CeleryExecutor(config, store)
    raise ConfigError(
        f"core.executor = {name!r} is not available; allowed values: {', '.join(EXECUTORS)}"
    )
