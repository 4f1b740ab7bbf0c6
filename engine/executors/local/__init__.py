"""The local executor and the worker processes it forks on this machine."""

from engine.executors.local.executor import LocalExecutor

__all__ = ["LocalExecutor"]
