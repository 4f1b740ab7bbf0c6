"""`run_cli`'s fork server: `python -m engine ARGS` forked from a process that imported
dagwatch once, instead of an interpreter that imports it all again for every command.

A command started this way is a real process of its own, as with `subprocess.run`: its own
environment (only what the test passes), working directory, stdin, stdout and stderr
(pipes), exit code, `atexit` handlers and interpreter shutdown. It runs `python -m
engine` exactly as the interpreter would (`runpy`, `__main__`), after the fork. What it
saves is the import of the CLI, SQLAlchemy, the metastore models and the plugins' verbs:
about half a second of CPU per command, which the tests pay hundreds of times.

The server is this module run as a script (`python -m tests.cli_forks SOCKET`) with an
environment as small as the commands' own. It imports, then serves one connection per
command: the client sends the arguments, environment and working directory as JSON with
its three pipe ends (SCM_RIGHTS); the server forks, answers the child's pid, and once the
child exited, its exit code (negative: the signal that killed it).

What needs the interpreter's own start (which modules a command imports, `-X importtime`)
calls `subprocess` itself; `DAGWATCH_TEST_REAL_CLI=1` sends every `run_cli` there too.
"""

from __future__ import annotations

import io
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
from typing import Any

#: Modules every command would import: the CLI, its verbs (the plugins' too), the store.
PRELOAD = (
    "engine.cli",
    "engine.store.models",
    "engine.store.migrate",
    "engine.api",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql",
    "psycopg",
)
PLUGINS = ("alerts.plugin", "console.plugin")
_CODE = struct.Struct("!i")


def _preload() -> None:
    import importlib

    from engine.cli.verbs import BUILTIN_VERBS

    for name in PRELOAD:
        importlib.import_module(name)
    for verb in BUILTIN_VERBS:
        verb.load()
    for name in PLUGINS:
        for verb in getattr(importlib.import_module(name), "VERBS", ()):
            verb.load()


def _recv_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data = b""
    fds: list[int] = []
    while not data.endswith(b"\n"):
        chunk, received, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
        if not chunk:
            raise EOFError("the client went away")
        data += chunk
        fds += received
    return json.loads(data), fds


def _serve(path: str) -> tuple[dict[str, Any], list[int]]:
    """Serve until the process forked for a command returns here: (request, its pipes)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    print("ready", flush=True)
    waiting: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, its client)
    while True:
        ready, _, _ = select.select([listener, *waiting], [], [])
        for fd in ready:
            if fd is listener:
                conn, _ = listener.accept()
                try:
                    request, fds = _recv_request(conn)
                except (EOFError, OSError, ValueError):
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:  # the command's process
                    listener.close()
                    for pidfd, (_pid, client) in waiting.items():
                        os.close(pidfd)
                        client.close()
                    conn.close()
                    return request, fds
                for received in fds:
                    os.close(received)
                conn.sendall(_CODE.pack(pid))
                waiting[os.pidfd_open(pid)] = (pid, conn)
            else:
                pid, conn = waiting.pop(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                try:
                    conn.sendall(_CODE.pack(os.waitstatus_to_exitcode(status)))
                except OSError:
                    pass  # the client gave up (its timeout)
                conn.close()


def _become_command(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: the pipes on 0, 1 and 2, the test's environment and directory."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    if request.get("new_session"):
        os.setsid()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["-m", *request["args"]]


# -- the client: what `run_cli` calls ------------------------------------------------------


class Server:
    """A fork server of this test process, started at its first command."""

    def __init__(self) -> None:
        self.process: Any = None
        self.path = ""

    def start(self) -> None:
        import tempfile

        folder = tempfile.mkdtemp(prefix="dagwatch-cli-forks-")
        self.path = os.path.join(folder, "socket")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.cli_forks", self.path],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self.process.stdout.readline().strip() != "ready":
            self.process.kill()
            raise RuntimeError("the CLI fork server did not start")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(
        self,
        args: tuple[str, ...],
        env: dict[str, str],
        fds: tuple[int, int, int],
        new_session: bool = False,
    ) -> tuple[int, socket.socket]:
        """Fork `python -m engine ARGS` with `fds` as its stdin, stdout and stderr: (its
        pid, the connection its exit code will arrive on)."""
        if not self.alive():
            self.start()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
            request = {
                "args": list(args),
                "env": env,
                "cwd": os.getcwd(),
                "new_session": new_session,
            }
            socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], list(fds))
            (pid,) = _CODE.unpack(_recv_exactly(conn, _CODE.size))
        except BaseException:
            conn.close()
            raise
        return pid, conn

    def popen(
        self,
        args: tuple[str, ...],
        env: dict[str, str],
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        text: bool = False,
        start_new_session: bool = False,
    ) -> Any:
        """`subprocess.Popen([python, -m, engine, *args], ...)` for this server's commands."""
        return ForkedPopen(self, args, env, stdin, stdout, stderr, text, start_new_session)

    def stop(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait()
        if self.process is not None:
            self.process.stdout.close()
        if self.path:
            import shutil

            shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)


class ForkedPopen(subprocess.Popen):  # type: ignore[type-arg]
    """A command forked by the server, driven like a `subprocess.Popen` of it: pipes,
    `poll`, `wait`, `communicate`, `send_signal`, `terminate`, `kill`, `returncode`.
    Its exit code arrives from the server, its parent."""

    def __init__(
        self,
        server: Server,
        args: tuple[str, ...],
        env: dict[str, str],
        stdin: Any,
        stdout: Any,
        stderr: Any,
        text: bool,
        start_new_session: bool,
    ) -> None:
        # Popen's __init__ would start the process: set what its other methods read
        self.args = [sys.executable, "-m", "engine", *args]
        self.stdin = self.stdout = self.stderr = None
        self.returncode = None
        self.encoding = self.errors = None
        self.text_mode = self.universal_newlines = bool(text)
        self.pipesize = -1
        self._waitpid_lock = threading.Lock()
        self._input = None
        self._communication_started = False
        self._sigint_wait_secs = 0.25
        self._closed_child_pipe_fds = True
        self._child_created = False
        theirs, ours, close = _child_fds(stdin, stdout, stderr)
        try:
            self.pid, self._conn = server.spawn(args, env, theirs, start_new_session)
        finally:
            for fd in close:
                os.close(fd)
        self._child_created = True
        for name, (fd, mode) in ours.items():
            stream: Any = open(fd, mode)
            if text:
                stream = io.TextIOWrapper(stream, write_through=(name == "stdin"))
            setattr(self, name, stream)

    def _ended(self, code: int) -> int:
        self.returncode = code
        self._conn.close()
        return code

    def _internal_poll(self, _deadstate: Any = None, **_ignored: Any) -> int | None:
        if self.returncode is None:
            ready, _, _ = select.select([self._conn], [], [], 0)
            if ready:
                self._ended(_CODE.unpack(_recv_exactly(self._conn, _CODE.size))[0])
        return self.returncode

    def _wait(self, timeout: float | None) -> int:
        if self.returncode is not None:
            return self.returncode
        self._conn.settimeout(timeout)
        try:
            data = _recv_exactly(self._conn, _CODE.size)
        except TimeoutError:
            raise subprocess.TimeoutExpired(self.args, timeout) from None
        finally:
            if self.returncode is None and self._conn.fileno() >= 0:
                self._conn.settimeout(None)
        return self._ended(_CODE.unpack(data)[0])


def _child_fds(
    stdin: Any, stdout: Any, stderr: Any
) -> tuple[tuple[int, int, int], dict[str, tuple[int, str]], list[int]]:
    """Popen's stdin/stdout/stderr arguments as (the command's three descriptors, this
    side's pipe ends by attribute, the descriptors to close once it is forked)."""
    ours: dict[str, tuple[int, str]] = {}
    close: list[int] = []
    theirs: list[int] = []
    for index, (name, spec) in enumerate(
        (("stdin", stdin), ("stdout", stdout), ("stderr", stderr))
    ):
        if spec is None:
            theirs.append(index)
        elif spec == subprocess.PIPE:
            read, write = os.pipe()
            mine, child = (write, read) if index == 0 else (read, write)
            ours[name] = (mine, "wb" if index == 0 else "rb")
            theirs.append(child)
            close.append(child)
        elif spec == subprocess.DEVNULL:
            null = os.open(os.devnull, os.O_RDWR)
            theirs.append(null)
            close.append(null)
        elif spec == subprocess.STDOUT and index == 2:
            theirs.append(theirs[1])
        elif isinstance(spec, int):
            theirs.append(spec)
        else:
            theirs.append(spec.fileno())
    return (theirs[0], theirs[1], theirs[2]), ours, close


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise RuntimeError("the CLI fork server went away mid-command")
        data += chunk
    return data


def _run_command() -> None:
    """`python -m engine` in this process, ended as the interpreter ends one: non-daemon
    threads joined, `atexit` handlers run, output flushed, the exit code of `SystemExit`
    (an uncaught exception printed by `sys.excepthook`, exit code 1). What the interpreter
    would do next, free every object, is skipped: in a forked process that would copy
    every page it shares with the server."""
    import atexit
    import runpy
    import signal
    import threading

    code = 0
    interrupted = False
    try:
        runpy.run_module("engine", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
        interrupted = isinstance(exc, KeyboardInterrupt)
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if interrupted:  # as the interpreter ends on an uncaught KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


if __name__ == "__main__":
    import gc

    _preload()
    gc.freeze()  # what the server imported is never scanned again, in it or a command
    _become_command(*_serve(sys.argv[1]))
    _run_command()
