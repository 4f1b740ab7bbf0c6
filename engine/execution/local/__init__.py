"""The local executor and the worker processes it forks on this machine."""

from engine.execution.local.executor import LocalExecutor

__all__ = ["LocalExecutor"]
