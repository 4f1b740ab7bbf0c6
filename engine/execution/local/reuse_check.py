"""Whether a worker may run another attempt: what the last one changed in its process.

A local-executor worker that runs attempts itself (`core.attempt_isolation = worker`)
must hand the next attempt the process the last one got. Task code can change that
process in ways no later task expects: environment variables, the working directory,
signal handlers, threads or child processes still running, memory it never gave back.
`Marks` notes what can be checked cheaply (well under a millisecond) before an attempt
and names what changed after it; the worker is then replaced by a fresh one.

What no check can see is a task changing the objects it shares with later attempts (a
module's globals, a monkeypatched library); `core.attempt_isolation = process` gives
every attempt a process of its own for DAGs that need that.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

from engine.execution.reaper import child_pids

#: Growth of the resident set (bytes) over the worker's first attempt that retires it.
MEMORY_GROWTH_LIMIT = 256 * 1024 * 1024
#: Signals whose handlers a task could change for the attempts after it.
_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGINT", "SIGHUP", "SIGALRM", "SIGCHLD", "SIGPIPE", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident set (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


@dataclass(frozen=True)
class Marks:
    """The parts of a process's state an attempt must leave as it found them."""

    environ: dict[str, str]
    cwd: str
    handlers: tuple
    threads: frozenset[int]
    children: frozenset[int]

    @classmethod
    def take(cls) -> Marks:
        return cls(
            environ=dict(os.environ),
            cwd=os.getcwd(),
            handlers=tuple(signal.getsignal(number) for number in _SIGNALS),
            threads=frozenset(thread.ident or 0 for thread in threading.enumerate()),
            children=frozenset(child_pids()),
        )

    def changes(self, memory_baseline: int) -> str | None:
        """What differs now from when the marks were taken, in words; None if nothing."""
        found = []
        environ = dict(os.environ)
        if environ != self.environ:
            keys = environ.keys() | self.environ.keys()
            names = sorted(k for k in keys if environ.get(k) != self.environ.get(k))
            found.append(f"environment variables changed ({', '.join(names[:5])})")
        try:
            if os.getcwd() != self.cwd:
                found.append("the working directory changed")
        except OSError:
            found.append("the working directory is gone")
        handlers = tuple(signal.getsignal(number) for number in _SIGNALS)
        changed = [
            signal.Signals(number).name
            for number, old, new in zip(_SIGNALS, self.handlers, handlers, strict=True)
            if old != new
        ]
        if changed:
            found.append(f"signal handlers changed ({', '.join(changed)})")
        threads = [t.name for t in threading.enumerate() if (t.ident or 0) not in self.threads]
        if threads:
            found.append(f"threads still running ({', '.join(sorted(threads)[:5])})")
        children = [pid for pid in child_pids() if pid not in self.children]
        if children:
            found.append(f"child processes still running ({', '.join(map(str, children[:5]))})")
        grown = resident_bytes() - memory_baseline
        if memory_baseline and grown > MEMORY_GROWTH_LIMIT:
            found.append(f"memory grew by {grown // 2**20} MiB")
        return "; ".join(found) or None
