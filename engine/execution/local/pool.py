"""The local executor's workers, seen from the executor: spawn, listen, notice deaths.

Workers are forked by the template process (`engine.execution.local.worker_template`),
which the executor starts from dagwatch's fork server (`engine.execution.forkserver`);
each worker talks to the executor over its own socket pair, whose far end the executor
hands to the template with the spawn request.
Workers are spawned on demand (a fork of the warm template costs milliseconds), so a
chain of tasks keeps one worker busy instead of `parallelism` idle. A worker is gone once
its connection closed and the template reported its exit code, which it does once it has
killed whatever the worker's attempt left running (or `EXIT_REPORT_WAIT` s later, or at
once if the template is gone: then the code is unknown). After a worker died young, the
next spawn waits `respawn_delay`, so a crash loop cannot spin.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from multiprocessing.reduction import send_handle
from typing import Any

from engine.execution import forkserver, reaper
from engine.execution.attempt import ConfigPayload
from engine.execution.local.worker_template import template_main
from engine.execution.messages import Exit, Exited, Spawned, SpawnWorker
from engine.execution.reaper import kill_group

log = logging.getLogger(__name__)
#: seconds to wait for the template's report of a worker's exit code: it reports once
#: it ended what the worker left (bounded by `reaper.END_TIMEOUT`)
EXIT_REPORT_WAIT = reaper.END_TIMEOUT + 1.0


@dataclass
class WorkerHandle:
    """One worker: its connection, and the executor's bookkeeping about it."""

    conn: Connection
    spawned: float
    pid: int | None = None  #: known once the template forked it
    ready: bool = False
    attempt: Any = None  #: the attempt it runs, if any (the executor's)
    files: OrderedDict[str, None] = field(default_factory=OrderedDict)  #: DAG files it ran
    idle_since: float = 0.0
    retiring: bool = False  #: asked to exit
    closed_at: float | None = None  #: when its connection closed
    #: what the template had to kill of what the worker left running, once it is gone
    ended: str | None = None

    @property
    def available(self) -> bool:
        return self.attempt is None and not self.retiring and self.closed_at is None


class WorkerPool:
    """Up to `size` workers forked by one template process."""

    respawn_delay = 1.0

    def __init__(self, payload: ConfigPayload, size: int, max_files: int) -> None:
        self.payload = payload
        self.size = size
        self.max_files = max_files
        self.workers: list[WorkerHandle] = []
        self._template: forkserver.Child | None = None  #: its process
        self._tconn: Any = None  #: and our connection to it
        self._unforked: deque[WorkerHandle] = deque()  #: spawn requests not yet answered
        #: (exit code, what the template ended) reported for workers not yet gone
        self._codes: dict[int, tuple[int, str | None]] = {}
        self._respawn_at = 0.0

    # -- spawning --------------------------------------------------------------------

    def start(self) -> None:
        """Start the template now, so that it warms up before the first attempt."""
        self._ensure_template()

    def spawn(self) -> WorkerHandle | None:
        """A new worker, or None at `size` workers or while a crash loop cools down."""
        now = time.monotonic()
        if self._live() >= self.size or now < self._respawn_at:
            return None
        template = self._ensure_template()
        ours, theirs = Pipe()
        worker = WorkerHandle(ours, spawned=now, idle_since=now)
        try:
            self._tconn.send(SpawnWorker())
            send_handle(self._tconn, theirs.fileno(), template.pid)
        except OSError:  # the template died; the next poll notices
            worker.closed_at = now
        finally:
            theirs.close()
        self.workers.append(worker)
        self._unforked.append(worker)
        return worker

    def respawn_at(self) -> float:
        """When `spawn` may succeed again."""
        return self._respawn_at if self._live() < self.size else float("inf")

    def _live(self) -> int:
        """Workers that count against `size`: one that is exiting holds no attempt."""
        return sum(1 for worker in self.workers if not worker.retiring)

    def _template_alive(self) -> bool:
        return self._template is not None and self._template.exitcode is None

    def _ensure_template(self) -> forkserver.Child:
        """The template process, started anew if it is not running."""
        if self._template is not None and self._template.exitcode is None:
            return self._template
        if self._template is not None:
            log.warning("the worker template exited; starting another")
            self._tconn.close()
            self._template.close()
        parent, child = Pipe()
        try:
            process = forkserver.start(
                template_main, self.payload, child, self.max_files, name="dagwatch-worker-template"
            )
        finally:
            child.close()
        self._template, self._tconn = process, parent
        for worker in self._unforked:  # the old template will never fork these
            worker.closed_at = worker.closed_at or time.monotonic()
        self._unforked.clear()
        return process

    # -- listening -------------------------------------------------------------------

    def handles(self) -> list[Any]:
        """What to wait on for news from the template and the workers."""
        handles: list[Any] = [w.conn for w in self.workers if w.closed_at is None]
        if self._template is not None and self._template.exitcode is None:
            handles += [self._tconn, self._template.sentinel]
        return handles

    def poll(self) -> tuple[list[tuple[WorkerHandle, object]], list[tuple[WorkerHandle, Any]]]:
        """(worker, message) pairs that arrived, and the (worker, exit code) of the gone."""
        self._read_template()
        messages = []
        for worker in self.workers:
            if worker.closed_at is not None:
                continue
            try:
                while worker.conn.poll():
                    messages.append((worker, worker.conn.recv()))
            except (EOFError, OSError):
                worker.closed_at = time.monotonic()
        return messages, self._gone()

    def _read_template(self) -> None:
        if self._template is None:
            return
        try:
            while self._tconn.poll():
                match self._tconn.recv():
                    case Spawned(pid=pid) if self._unforked:
                        self._unforked.popleft().pid = pid
                    case Exited(pid=pid, exit_code=code, ended=ended):
                        self._codes[pid] = (code, ended)
        except (EOFError, OSError):
            pass  # it died: `_ensure_template` replaces it when a worker is needed

    def _gone(self) -> list[tuple[WorkerHandle, Any]]:
        now = time.monotonic()
        template_alive = self._template_alive()
        gone = []
        for worker in list(self.workers):
            report = self._codes.get(worker.pid) if worker.pid is not None else None
            exited = report is not None
            waited = worker.closed_at is not None and (
                now >= worker.closed_at + EXIT_REPORT_WAIT or not template_alive
            )
            if not (exited or waited):
                continue
            self.workers.remove(worker)
            worker.conn.close()
            code: int | None = None
            if report is not None and worker.pid is not None:
                code, worker.ended = self._codes.pop(worker.pid)
            gone.append((worker, code))
            asked = worker.retiring and code in (0, None)  # it exited as asked or announced
            if now - worker.spawned < self.respawn_delay and not asked:
                self._respawn_at = now + self.respawn_delay
        return gone

    def next_deadline(self) -> float:
        """When `poll` has something to do without news arriving."""
        deadlines = [w.closed_at + EXIT_REPORT_WAIT for w in self.workers if w.closed_at]
        return min(deadlines, default=float("inf"))

    # -- stopping --------------------------------------------------------------------

    def send(self, worker: WorkerHandle, message: object) -> None:
        try:
            worker.conn.send(message)
        except OSError:  # it died: `poll` notices
            pass

    def retire(self, worker: WorkerHandle) -> None:
        """Ask an idle worker to exit (it is gone once `poll` says so)."""
        worker.retiring = True
        self.send(worker, Exit())

    def kill(self, worker: WorkerHandle) -> bool:
        """SIGKILL the worker and whatever it started; False if its pid is unknown yet."""
        if worker.pid is None:
            return False
        kill_group(worker.pid, signal.SIGKILL, tree=True)
        return True

    def stop(self, deadline: float) -> None:
        """Ask every worker to exit, kill those still there at `deadline`, then the template."""
        self.size = 0
        for worker in self.workers:
            self.send(worker, Exit())
        while self.workers and time.monotonic() < deadline:
            wait_for(self.handles(), min(0.1, max(0.0, deadline - time.monotonic())))
            self.poll()
        for worker in self.workers:
            log.warning("worker %s did not exit; killing it", worker.pid)
            self.kill(worker)
            worker.conn.close()
        self.workers.clear()
        template, self._template = self._template, None
        if template is None:
            return
        try:
            self._tconn.send(Exit())
        except OSError:
            pass
        template.join(max(1.0, deadline - time.monotonic()))
        if template.exitcode is None:
            kill_group(template.pid, signal.SIGKILL)
            template.join(1.0)
        self._tconn.close()
        if template.exitcode is not None:
            template.close()
