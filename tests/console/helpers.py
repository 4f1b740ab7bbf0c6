"""Starting real console processes on free loopback ports, and waiting for them."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Poll until `condition()` is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


#: the operator the browser tests log in as
USERNAME, PASSWORD = "sre", "n1ght-0wl"


def password_console_env(cli_env: dict[str, str], store, **extra: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The environment of a console with password auth on a free port and the test's
    metastore (migrated), with the operator USERNAME created."""
    from tests.helpers import run_cli

    env = {
        **cli_env,
        "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": store.engine.url.render_as_string(False),
        "DAGWATCH__CONSOLE__PORT": str(free_port()),
        "DAGWATCH__CONSOLE__AUTH": "password",
        **extra,
    }
    assert run_cli("db", "migrate", env=env).returncode == 0
    created = run_cli(
        "users", "create", "--username", USERNAME, "--role", "operator", env=env,
        input=f"{PASSWORD}\n",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    return env
