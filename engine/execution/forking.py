"""The one forkserver dagwatch forks its workers from, and killing what they leave behind.

Multiprocessing allows a single forkserver per process, so the DAG processor and the
local executor share it; its server imports dagwatch, SQLAlchemy and the database
drivers once, which makes a worker cost a fork instead of an interpreter start and a
few hundred milliseconds of imports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from multiprocessing import context as mp_contexts
from multiprocessing import popen_forkserver, spawn
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Imported once by the forkserver's server; every child starts with them in memory.
PRELOAD = (
    "engine",
    "engine.parsing.parser",
    "engine.parsing.serialization",
    "engine.execution.runner",
    "engine.runtime",
    "engine.store.db",
    "engine.store.runs",
    "engine.store.transitions",
    "engine.execution.attempt",
    "engine.execution.local.worker_template",
    "sqlalchemy",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql.psycopg",
    "psycopg",
    "pendulum",
    "jinja2",
    "engine.execution.local.preload",  # last: warms SQLAlchemy up, then freezes the GC
)

_context: Any = None
_lean = threading.local()
_get_preparation_data = spawn.get_preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    """What a child prepares before running its target, minus the parent's `__main__`
    when launched from here: our targets live in dagwatch modules, and re-running the
    parent's main script (the CLI, pytest) in each child costs more than the rest of its
    start-up. Other launches (not ours) are left untouched."""
    data = _get_preparation_data(name)
    if getattr(_lean, "active", False):
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


class _Popen(popen_forkserver.Popen):
    def _launch(self, process_obj: Any) -> None:
        _lean.active = True
        try:
            super()._launch(process_obj)  # type: ignore[misc]  # typeshed omits Popen._launch
        finally:
            _lean.active = False


class _Process(mp_contexts.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _Popen(process_obj)


class _Context(mp_contexts.ForkServerContext):
    Process = _Process


def mp_context() -> Any:
    """The forkserver context whose server has preloaded `PRELOAD`."""
    global _context
    if _context is None:
        context = _Context()
        context.set_forkserver_preload(list(PRELOAD))
        spawn.get_preparation_data = _preparation_data
        _context = context
    return _context


def _noop() -> None:
    """Target of the warm-up child."""


def warm_up() -> None:
    """Start the forkserver and wait until its preloads are done, so the first real child
    does not pay for them."""
    process = mp_context().Process(target=_noop, name="dagwatch-warm-up", daemon=True)
    process.start()
    process.join()


def _children_map() -> dict[int, list[tuple[int, int]]]:
    """ppid -> [(pid, pgid)] for every process visible in /proc (empty elsewhere)."""
    children: dict[int, list[tuple[int, int]]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return children
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: split after it.
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append((int(entry.name), int(fields[2])))
    return children


def descendant_groups(pid: int) -> set[int]:
    """Process groups of `pid`'s descendants, which may have left its group (a task's
    `start_new_session=True` subprocess does)."""
    children = _children_map()
    groups: set[int] = set()
    todo = [pid]
    while todo:
        for child, pgid in children.get(todo.pop(), []):
            groups.add(pgid)
            todo.append(child)
    groups.discard(os.getpgrp())  # never ourselves
    return groups


def kill_group(pid: int, sig: int, *, tree: bool = False) -> None:
    """Send `sig` to the process group led by `pid` (and, with `tree`, to the groups of its
    descendants first); fall back to `pid` alone when it does not lead a group yet."""
    groups = descendant_groups(pid) if tree else set()
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:  # forked but not yet in its own group
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    except PermissionError as exc:
        log.warning("cannot signal process group %s: %s", pid, exc)
    for group in groups - {pid}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


def describe_exit(code: int | None) -> str:
    """`code N` or `code -N (signal NAME)`, as multiprocessing reports exit codes."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"code {code} (signal {name})"
    return f"code {code}"
