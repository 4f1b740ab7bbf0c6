"""The local executor's worker template: one warm engine that every worker is forked from.

Warming a metastore engine up (compiling the statements an attempt runs into its cache,
building the ORM structures it needs) costs tens of milliseconds of CPU and ~14 MB that a
forked process no longer shares. The template pays that once per executor, then forks the
workers on request, so each starts warm and shares those pages instead of copying them.
It runs no user code: DAG files are imported by the workers.

It is started from dagwatch's fork server (`engine.execution.forkserver`). Messages on
its connection (`engine.execution.messages`): `SpawnWorker` (then, as SCM_RIGHTS, the
worker's end of its socket pair) and `Exit` from the executor; `Spawned` and `Exited`
back. The template is the workers' child subreaper (`engine.execution.reaper`): what a worker's
attempt started and left running when the worker died (SIGKILL, a hard timeout) is
re-parented to it, and it kills and reaps all of that before it reports the worker's
exit, so the executor never reports a lost attempt while any of its processes runs. On
`Exit` it ends whatever is left. Workers outlive the template if it dies (the executor
is gone); only their exit codes are then unknown.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle
from typing import NoReturn

from engine import runtime
from engine.config import Config
from engine.execution import reaper
from engine.execution.attempt import ConfigPayload, config_from_payload, extend_sys_path
from engine.execution.local import warmup
from engine.execution.local.worker import serve_worker
from engine.execution.messages import Exited, Spawned, SpawnWorker
from engine.store.db import Store

log = logging.getLogger(__name__)
#: ms between looks for exited workers where pidfd_open is unavailable
_POLL_MS = 500


def template_main(payload: ConfigPayload, conn: Connection, max_files: int) -> None:
    """Template entry point: warm up once, then fork workers until told to exit."""
    os.setpgrp()  # signals for the scheduler's terminal group are not for it
    reaper.become_subreaper()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the executor stops it
    config = config_from_payload(payload)
    store = Store.from_config(config)
    runtime.configure(config, store)
    extend_sys_path(config)
    try:
        warmup.rolled_back(store, config)
    except Exception as exc:  # cold workers are slower, not wrong
        log.warning("worker warm-up attempt failed: %s", exc)
    store.dispose()  # never carry a connection across fork()
    gc.freeze()  # workers and attempts never traverse (and copy) what exists now
    _Template(conn, store, config, max_files).serve()


class _Template:
    def __init__(self, conn: Connection, store: Store, config: Config, max_files: int) -> None:
        self.conn = conn
        self.store = store
        self.config = config
        self.max_files = max_files
        self.poller = select.poll()
        self.poller.register(conn.fileno(), select.POLLIN)
        self.pidfds: dict[int, int] = {}  #: pidfd -> worker pid
        self.unwatched: set[int] = set()  #: workers without a pidfd, polled instead

    def serve(self) -> None:
        while True:
            timeout = _POLL_MS if self.unwatched else None
            for fd, _event in self.poller.poll(timeout):
                if fd in self.pidfds:
                    self._reap(self.pidfds[fd])
                elif not self._command():
                    return
            for pid in list(self.unwatched):
                self._reap(pid, block=False)

    def _command(self) -> bool:
        """Handle one message; False when the template should exit."""
        try:
            message = self.conn.recv()
        except (EOFError, OSError):  # the executor is gone: let the workers finish
            return False
        if not isinstance(message, SpawnWorker):
            reaper.end_children()  # the executor stopped (or killed) every worker first
            return False
        fd = recv_handle(self.conn)
        pid = os.fork()
        if pid == 0:
            self._become_worker(fd)
        os.close(fd)
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.unwatched.add(pid)
        else:
            self.pidfds[pidfd] = pid
            self.poller.register(pidfd, select.POLLIN)
        self._send(Spawned(pid))
        return True

    def _become_worker(self, fd: int) -> NoReturn:
        code = 1
        try:
            self.conn.close()
            for pidfd in self.pidfds:
                os.close(pidfd)
            serve_worker(Connection(fd), self.store, self.config, self.max_files)
            code = 0
        except BaseException:
            log.exception("worker %s failed", os.getpid())
        finally:
            os._exit(code)

    def _reap(self, pid: int, block: bool = True) -> None:
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        if not done:
            return
        self.unwatched.discard(pid)
        for pidfd, watched in list(self.pidfds.items()):
            if watched == pid:
                self.poller.unregister(pidfd)
                os.close(pidfd)
                del self.pidfds[pidfd]
        # What the dead worker's attempt left running was re-parented here: end it first.
        ended = reaper.end_children(spare=set(self.pidfds.values()) | self.unwatched)
        self._send(Exited(pid, os.waitstatus_to_exitcode(status), ended.describe()))

    def _send(self, message: object) -> None:
        try:
            self.conn.send(message)
        except OSError:
            pass  # the executor is gone; workers finish on their own
