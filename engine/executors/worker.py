"""A local-executor worker: cached DAG files, and a forked process for each attempt.

Workers are forked from the executor's template (`engine.executors.template`), so each
starts with a metastore engine whose statement cache is warm; a worker keeps the DAG
files it imported (by version, least recently used dropped). For each attempt it forks a
child that leads its own process group, drops the inherited connection pool
(SQLAlchemy's post-fork recipe; workers hold no connection when they fork) and runs the
attempt through the runner. An attempt so costs a fork instead of imports, a new engine
and cold statements, yet still gets a process of its own: a task that crashes, hangs, is
killed or changes process state harms neither the worker nor other attempts.

Messages on the worker's connection (tuples):
  executor → worker: ("run", AttemptRequest) | ("stop", ti_id, reason) | ("exit",)
  worker → executor: ("ready",) | ("started", ti_id, pid)
                   | ("done", ti_id, pid, state, error, exit_code, relayed metrics)
"started" goes out before the child may begin, so the executor always knows the pid of an
attempt process that could be running (and kills it if the worker dies).
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import pickle
import select
import signal
import sys
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe
from typing import Any, NoReturn

from engine import runner
from engine.config import Config
from engine.executors.attempt import (
    DagCache,
    StopHandler,
    UnrunnableAttempt,
    hostname,
    load_dag,
    refuse,
)
from engine.executors.base import AttemptRequest
from engine.forking import kill_group
from engine.observability.relay import install_relay
from engine.store.db import Store

log = logging.getLogger(__name__)
_TERM = {signal.SIGTERM}
#: ms between checks on an attempt process where pidfd_open is unavailable
_POLL_MS = 50


def serve_worker(conn: Connection, store: Store, config: Config, max_files: int) -> None:
    """A worker's life, in a process just forked from the template."""
    os.setpgrp()  # its own group: killing it (and what it spawned) spares its siblings
    worker = Worker(conn, store, config, DagCache(max_files))
    worker.send(("ready",))
    worker.serve()


@dataclass
class _Child:
    """One attempt process, seen from its worker (raw descriptors: the worker's pages are
    shared with the child while it runs, and every object touched then gets copied)."""

    pid: int
    result: int  #: read end of the pipe the outcome arrives on
    stop: Connection  #: the first message lets it start; later ones are stop reasons
    exited: int | None  #: a pidfd, readable once it exits (None: poll instead)
    data: bytearray = field(default_factory=bytearray)
    stopped: bool = False

    def read(self) -> bool:
        """Take what the pipe holds; False at end of file."""
        while True:
            try:
                chunk = os.read(self.result, 65536)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    return True
                raise
            if not chunk:
                return False
            self.data += chunk

    def outcome(self) -> tuple[str | None, str | None, list]:
        """(state, error, relayed metrics) as the attempt process wrote them."""
        try:
            return pickle.loads(self.data)
        except Exception:  # nothing (or half an outcome) arrived
            return None, None, []

    def reap(self, block: bool) -> int | None:
        """Its exit code (negative: killed by that signal), or None while it runs."""
        pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        return os.waitstatus_to_exitcode(status) if pid else None

    def close(self) -> None:
        os.close(self.result)
        self.stop.close()
        if self.exited is not None:
            os.close(self.exited)


class Worker:
    """Serves the executor's requests one attempt at a time."""

    def __init__(self, conn: Connection, store: Store, config: Config, cache: DagCache) -> None:
        self.conn = conn
        self.store = store
        self.config = config
        self.cache = cache
        self.listening = True  #: False once the executor is gone
        self.exiting = False
        self._imports = 0

    def send(self, message: tuple) -> None:
        try:
            self.conn.send(message)
        except OSError:  # the executor is gone: finish what runs, then exit
            self.listening = False

    def serve(self) -> None:
        while self.listening and not self.exiting:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                return
            if message[0] == "exit":
                return
            if message[0] == "run":
                self.run(message[1])
            # a "stop" for an attempt that already ended: nothing left to stop

    def run(self, request: AttemptRequest) -> None:
        """Load the DAG (cached), fork the attempt, supervise it, report how it ended."""
        try:
            dag = load_dag(request.fileloc, request.dag_id, request.task_id, self.cache)
        except UnrunnableAttempt as exc:
            state, error = refuse(self.store, request, exc)
            self.store.dispose()  # never carry a connection across fork()
            self.send(
                ("done", request.ti_id, None, state.value if state else None, error, None, [])
            )
            return
        if self.cache.imports != self._imports:
            # New DAG objects: age them now (the template's and forkserver's are frozen, so
            # this scans little), or every attempt's young-generation collections would.
            self._imports = self.cache.imports
            gc.collect()
        child = self._fork(request, dag)
        self.send(("started", request.ti_id, child.pid))
        child.stop.send("go")
        code = self._supervise(request, child)
        state, error, relayed = child.outcome()
        self.send(("done", request.ti_id, child.pid, state, error, code, relayed))

    def _fork(self, request: AttemptRequest, dag: Any) -> _Child:
        result_r, result_w = os.pipe()
        stop_r, stop_w = Pipe(duplex=False)
        # SIGTERM waits (blocked) until the child has its handler and the go-ahead.
        signal.pthread_sigmask(signal.SIG_BLOCK, _TERM)
        try:
            pid = os.fork()
            if pid == 0:
                self.conn.close()
                stop_w.close()
                os.close(result_r)
                _attempt_child(self.store, self.config, request, dag, result_w, stop_r)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _TERM)
        os.close(result_w)
        stop_r.close()
        os.set_blocking(result_r, False)
        return _Child(pid, result_r, stop_w, _pidfd(pid))

    def _supervise(self, request: AttemptRequest, child: _Child) -> int:
        """Relay stop requests and collect the outcome until the attempt process exits."""
        poller = select.poll()
        for fd in (child.result, child.exited, self.conn.fileno() if self.listening else None):
            if fd is not None:
                poller.register(fd, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll(None if child.exited is not None else _POLL_MS)}
            if self.listening and self.conn.fileno() in ready and not self._control(request, child):
                poller.unregister(self.conn.fileno())
            if child.result in ready and not child.read():
                poller.unregister(child.result)
            if child.exited is None or child.exited in ready:
                code = child.reap(block=child.exited is not None)
                if code is not None:
                    child.read()  # what it wrote before exiting
                    child.close()
                    return code

    def _control(self, request: AttemptRequest, child: _Child) -> bool:
        """Handle a message that arrived mid-attempt; False once the executor is gone."""
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self.listening = False  # let the attempt finish; exit afterwards
            return False
        if message[0] == "stop" and message[1] == request.ti_id and not child.stopped:
            child.stopped = True
            try:
                child.stop.send(message[2])
            except OSError:
                pass  # it is exiting already
            kill_group(child.pid, signal.SIGTERM)
        elif message[0] == "exit":
            self.exiting = True
        elif message[0] == "run":
            log.error("worker got an attempt while busy; dropped: %s", message[1])
        return True


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _attempt_child(
    store: Store, config: Config, request: AttemptRequest, dag: Any, result: int, stop: Connection
) -> NoReturn:
    """The attempt process: own group, own connections, run, report, exit (never return)."""
    code = 1
    try:
        os.setpgrp()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, StopHandler(stop))
        if stop.recv() != "go":
            raise RuntimeError("the worker did not let the attempt start")
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _TERM)  # a pending stop lands now
        store.engine.dispose(close=False)  # the worker's pool is not ours to use
        relay = install_relay(config)
        code, outcome = _run(store, config, request, dag)
        data = memoryview(pickle.dumps((*outcome, relay.drain())))
        while data:
            data = data[os.write(result, data) :]
        store.dispose()
    except BaseException:
        log.exception("attempt process of task instance %s failed", request.ti_id)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _run(
    store: Store, config: Config, request: AttemptRequest, dag: Any
) -> tuple[int, tuple[str | None, str | None]]:
    try:
        result = runner.run_attempt(store, config, dag, request.ti_id, hostname=hostname())
    except BaseException as exc:  # the attempt could not be recorded: report, exit non-zero
        log.exception("attempt of task instance %s failed outside the task", request.ti_id)
        return 1, (None, f"the attempt process failed: {type(exc).__name__}: {exc}")
    return 0, (result.state.value, result.error)
