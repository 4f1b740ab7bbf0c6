"""A process of dagwatch stops, and exits non-zero, when one of its own threads dies.

The scheduler leans on threads it does not run itself: the DAG processor, the services
plugins add (the alert dispatcher), the metrics pushers. If one of them dies with an
exception, carrying on would leave the process up while it silently no longer parses,
alerts or reports; `ThreadWatch` turns the death into a stop with the reason, which the
CLI prints as one line before exiting with code 1. A thread is dagwatch's own when its
name starts with `dagwatch-` or it was started inside `adopting_threads()` (how the
threads of a plugin's service are known); threads of user code (the sequential
executor runs tasks in the scheduler's process) are left to Python's default handling.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

log = logging.getLogger(__name__)

#: Name prefix of the threads dagwatch starts itself.
THREAD_PREFIX = "dagwatch-"

_adopted: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
#: the threads alive when the open `adopting_threads` block began (None: no block open)
_adopting_since: set[threading.Thread] | None = None
_adopted_lock = threading.RLock()


@contextmanager
def adopting_threads() -> Iterator[None]:
    """Count the threads started inside the block as dagwatch's own (one block at a time)."""
    global _adopting_since
    with _adopted_lock:
        _adopting_since = set(threading.enumerate())
    try:
        yield
    finally:
        with _adopted_lock:
            before, _adopting_since = _adopting_since, None
            _adopted.update(thread for thread in threading.enumerate() if thread not in before)


def is_internal(thread: threading.Thread | None) -> bool:
    """Whether `thread` is one of dagwatch's own (see the module doc)."""
    if thread is None:
        return False
    with _adopted_lock:
        # A thread that dies before its block ends is judged by the open block.
        started_in_block = _adopting_since is not None and thread not in _adopting_since
        return thread.name.startswith(THREAD_PREFIX) or thread in _adopted or started_in_block


def describe_death(thread_name: str, exc: BaseException | None) -> str:
    """One line: which thread died, of what."""
    what = type(exc).__name__ if exc is not None else "an unknown error"
    text = str(exc).strip().splitlines()[0] if exc is not None and str(exc).strip() else ""
    return f"the {thread_name} thread died: {what}" + (f": {text}" if text else "")


class ThreadWatch:
    """While installed, the death of an internal thread sets `stop` and keeps the reason.

    Use it as a context manager around the loop; after it, `failure` is the one-line
    reason of the first death (None if every thread lived).
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.failure: str | None = None
        self._previous = threading.excepthook
        self._lock = threading.Lock()

    def __enter__(self) -> ThreadWatch:
        self._previous = threading.excepthook
        threading.excepthook = self._hook
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if threading.excepthook == self._hook:
            threading.excepthook = self._previous

    def _hook(self, args: threading.ExceptHookArgs) -> None:
        if not is_internal(args.thread):
            self._previous(args)
            return
        name = args.thread.name if args.thread is not None else "unnamed"
        reason = describe_death(name, args.exc_value)
        with self._lock:
            if self.failure is None:
                self.failure = reason
        log.critical("%s; stopping", reason)
        # The traceback is for a bug report, not for the 3 a.m. reader of the log.
        log.debug(
            "traceback of the %s thread:\n%s",
            name,
            "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)),
        )
        self.stop.set()


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` exists on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
