"""dagwatch's fork server: a process that imports the engine once and forks children on request.

A child forked from it starts with dagwatch, SQLAlchemy, the database drivers and a
warmed-up ORM already in memory (`PRELOAD`, then `warmup.in_memory`, then a frozen
garbage collector), so a DAG-file import, a callback process or the local executor's
worker template costs a fork instead of an interpreter start and a few hundred
milliseconds of imports. One server per client process: the DAG processor and the local
executor share it.

It is dagwatch's own rather than multiprocessing's forkserver because that one prepares
every child by re-running the parent's main script (the `dagwatch` entry point, pytest's),
which costs more than the rest of a child's start-up (73 ms for `dagwatch`, about 0.4 s
for pytest), and has no public switch to skip it; dagwatch used to patch its internals
for that. The decision record is docs/dev/0014-own-fork-server.md.

How it works: the client starts the server with `python -c` (the client's `sys.path`,
one end of a SOCK_SEQPACKET socket pair) and waits for its first packet, sent once the
preloads are done. Each `start(target, *args)` creates a socket pair for the child's
status and sends the server one packet: a pickled `messages.Fork` with, as SCM_RIGHTS,
the status socket and the descriptor of every `Connection` among the arguments (pickled
as its index among them). The server forks; the child closes what is the server's,
restores its signal handlers, rebuilds the connections and calls `target(*args)`, exiting
0 on return, with the code of a `SystemExit`, or 1 on an exception (as a
`multiprocessing.Process` would). The server answers `Forked(pid)` on the status socket
at once, and `Reaped(exit_code)` when it has reaped the child. It exits when the client's
end of the socket closes (the client exited or died); its children live on.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import io
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from typing import Any, NoReturn

from engine.execution.messages import Fork, Forked, Reaped

log = logging.getLogger(__name__)

#: Imported once by the server; every child starts with them in memory.
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
    "cryptography.fernet",  # engine.secrets imports it on first use: attempts find it loaded
)
#: the largest request packet the server reads (a Fork is a few kB)
_MAX_PACKET = 1 << 20
#: the most descriptors one request carries
_MAX_FDS = 16
#: the exit code of a child whose exit the server could not report (it is gone)
UNKNOWN_EXIT = 255


class Child:
    """A process the fork server forked, as `multiprocessing.Process` shows one."""

    def __init__(self, pid: int, status: Connection, name: str) -> None:
        self.pid = pid
        self.name = name
        self._status = status
        self._exitcode: int | None = None

    @property
    def sentinel(self) -> int:
        """Readable once the child exited (or the server is gone)."""
        return self._status.fileno()

    @property
    def exitcode(self) -> int | None:
        """Its exit code (negative: killed by that signal), None while it runs."""
        self.join(0)
        return self._exitcode

    def join(self, timeout: float | None = None) -> None:
        """Wait up to `timeout` s (None: as long as it takes) for the child to exit."""
        if self._exitcode is not None or self._status.closed:
            return
        if not wait_for([self._status], timeout):
            return
        try:
            message = self._status.recv()
        except (EOFError, OSError):
            message = None
        self._exitcode = message.exit_code if isinstance(message, Reaped) else UNKNOWN_EXIT

    def is_alive(self) -> bool:
        return self.exitcode is None

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self.exitcode is None:  # not reaped yet, so the pid is still the child's
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        self._status.close()


class ForkServer:
    """The client's side: starts the server once, then asks it for children."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._process: subprocess.Popen | None = None

    def ensure_running(self) -> None:
        """Start the server unless it runs; return once its preloads are done."""
        with self._lock:
            if self._socket is not None and self._process and self._process.poll() is None:
                return
            self._stop()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            code = (
                f"import sys; sys.path[:] = {sys.path!r}; "
                f"from engine.execution.forkserver import main; main({theirs.fileno()})"
            )
            with theirs:
                self._process = subprocess.Popen(
                    [sys.executable, "-c", code], pass_fds=(theirs.fileno(),)
                )
            if not ours.recv(16):  # its first packet: ready
                ours.close()
                raise RuntimeError("the fork server exited while starting")
            self._socket = ours

    def start(self, target: Any, *args: Any, name: str = "dagwatch-child") -> Child:
        """Fork a child of the server that calls `target(*args)` (a module-level function);
        `Connection`s among the arguments arrive as connections of the child's own."""
        self.ensure_running()
        assert self._socket is not None
        ours, theirs = socket.socketpair()
        fds = [theirs.fileno()]
        payload = io.BytesIO()
        _Pickler(payload, fds).dump(Fork(target, args, name))
        try:
            socket.send_fds(self._socket, [payload.getvalue()], fds)
        finally:
            theirs.close()
        status = Connection(ours.detach())
        try:
            forked = status.recv()
        except (EOFError, OSError):
            status.close()
            raise RuntimeError("the fork server did not fork the child") from None
        return Child(forked.pid, status, name)

    def stop(self) -> None:
        """Close our end, so the server exits (its children live on), and reap it."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._socket is not None:
            self._socket.close()  # the server exits when it reads the end of it
            self._socket = None
        if self._process is not None:
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


_server = ForkServer()
atexit.register(_server.stop)  # reaped before the interpreter's end, not left to the GC


def start(target: Any, *args: Any, name: str = "dagwatch-child") -> Child:
    """Fork a child of this process's fork server that calls `target(*args)`."""
    return _server.start(target, *args, name=name)


def warm_up() -> None:
    """Start the fork server and wait until its preloads are done, so the first real
    child does not pay for them."""
    _server.ensure_running()


class _Pickler(pickle.Pickler):
    """Sends each `Connection` by descriptor (appended to `fds`), by its index there."""

    def __init__(self, file: io.BytesIO, fds: list[int]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.fds = fds

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Connection):
            self.fds.append(obj.fileno())
            return ("fd", len(self.fds) - 1)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, fds: list[int]) -> None:
        super().__init__(file)
        self.fds = fds

    def persistent_load(self, pid: Any) -> Any:
        kind, index = pid
        if kind != "fd":
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        return Connection(self.fds[index])


# -- the server ----------------------------------------------------------------------


def main(fd: int) -> None:
    """The server: preload, warm up, then fork on request until the client goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C is for the client, which stops us
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional driver: its children import it if they need it
            pass
    _warm_up()
    _Server(socket.socket(fileno=fd)).serve()


def _warm_up() -> None:
    """Do once what every child would repeat: a no-op attempt against a throwaway in-memory
    metastore builds the mappers, the ORM and compiler structures, logging and templating;
    then the collector freezes all of it, so a child never traverses (and so copies) those
    pages. A failure leaves children cold, which is slower, not wrong."""
    from engine.execution.local import warmup

    try:
        warmup.in_memory()
    except Exception as exc:
        log.warning("fork server warm-up attempt failed: %s", exc)
    gc.freeze()


class _Server:
    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.children: dict[int, Connection] = {}  #: pid -> its status connection
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.handlers = {
            signal.SIGCHLD: signal.signal(signal.SIGCHLD, _ignore),
            signal.SIGINT: signal.default_int_handler,
        }
        signal.set_wakeup_fd(self.wake_w)

    def serve(self) -> None:
        self.client.send(b"ready")
        while True:
            for ready in wait_for([self.client, self.wake_r]):
                if ready == self.wake_r:
                    os.read(self.wake_r, 4096)
                    self._reap()
                elif not self._fork():
                    return

    def _fork(self) -> bool:
        """Serve one request; False once the client is gone."""
        try:
            data, fds, _flags, _address = socket.recv_fds(self.client, _MAX_PACKET, _MAX_FDS)
        except OSError:
            return False
        if not data:
            return False
        status = Connection(fds[0])
        pid = os.fork()
        if pid == 0:
            self._become_child(data, fds)
        for fd in fds[1:]:
            os.close(fd)
        try:
            status.send(Forked(pid))
        except OSError:
            pass  # the client gave up on it; it is reaped all the same
        self.children[pid] = status
        return True

    def _reap(self) -> None:
        while self.children:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            status = self.children.pop(pid, None)
            if status is None:
                continue
            try:
                status.send(Reaped(os.waitstatus_to_exitcode(wait_status)))
            except OSError:
                pass
            status.close()

    def _become_child(self, data: bytes, fds: list[int]) -> NoReturn:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig, handler in self.handlers.items():
                signal.signal(sig, handler)
            os.close(self.wake_r)
            os.close(self.wake_w)
            self.client.close()
            for status in self.children.values():
                status.close()
            os.close(fds[0])
            request = _Unpickler(io.BytesIO(data), fds).load()
            code = _call(request)
        finally:
            exit_child(code)


def _call(request: Fork) -> int:
    """Call the child's target; its exit code, as `multiprocessing.Process` gives it."""
    try:
        request.target(*request.args)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        sys.stderr.write(f"{exc.code}\n")
        return 1
    except BaseException:
        sys.stderr.write(f"Process {request.name}:\n")
        traceback.print_exc()
        return 1
    return 0


def exit_child(code: int) -> NoReturn:
    """End a forked child at once: flush what it printed, run no exit handlers (they are
    its parent's)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def _ignore(signum: int, frame: Any) -> None:
    """SIGCHLD's handler: the wake-up descriptor, not this, tells the loop to reap."""
