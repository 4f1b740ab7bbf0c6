"""The running task's context, reachable from code that was not handed it."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import Any

from engine.exceptions import DagwatchError

_current: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "dagwatch_task_context", default=None
)


def get_current_context() -> Mapping[str, Any]:
    """The context (ds, ti, params, ...) of the task running in this thread."""
    context = _current.get()
    if context is None:
        raise DagwatchError("get_current_context() can only be called inside a running task")
    return context


@contextlib.contextmanager
def set_current_context(context: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Make `context` current for the duration of the block (used by the runner)."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
