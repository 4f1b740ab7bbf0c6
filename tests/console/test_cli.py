"""`dagwatch console`: refuses an open address without auth; serves the app on loopback."""

from __future__ import annotations

import subprocess

import pytest

from console.settings import ConsoleSettings, is_loopback
from engine.exceptions import ConfigError
from tests.console.helpers import free_port, http_ok, stop, wait_for
from tests.helpers import run_cli, start_cli


@pytest.mark.parametrize("host", ["127.0.0.1", "127.5.0.1", "::1", "localhost"])
def test_loopback_addresses(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.org"])
def test_open_addresses_need_auth(host):
    open_console = ConsoleSettings(host, 8501, 5.0, "none", 25)
    with pytest.raises(ConfigError, match=r"not a loopback address and console\.auth is 'none'"):
        open_console.check_bind()
    ConsoleSettings(host, 8501, 5.0, "password", 25).check_bind()  # allowed with auth


def test_console_refuses_an_open_address_without_auth_in_one_line(cli_env):
    result = run_cli("console", "--host", "0.0.0.0", env=cli_env)
    assert result.returncode == 2  # a setting that is not allowed: a usage error
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a loopback address" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_console_serves_the_app_on_loopback(cli_env, tmp_path):
    port = free_port()
    log = tmp_path / "console.log"
    with log.open("wb") as out:
        process = start_cli(
            "console",
            "--port",
            str(port),
            env=cli_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/_stcore/health"), what="console")
            assert http_ok(f"http://127.0.0.1:{port}/")
        finally:
            stop(process)
    assert f"console: http://127.0.0.1:{port}" in log.read_text()


def test_no_page_renders_html():
    """User data (DAG ids, logs, errors, conf) is shown as text, never as HTML."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "console"
    sources = {path.name: path.read_text() for path in root.rglob("*.py")}
    assert len(sources) > 10
    for forbidden in ("unsafe_allow_html", "st.html(", "components.v1"):
        # one exception: auth.py's fixed script that asks the console's session route to
        # set or drop the login cookie (its only values are JSON-encoded: a method, a token)
        found = [name for name, text in sources.items() if forbidden in text]
        assert found == (["auth.py"] if forbidden == "st.html(" else []), forbidden
    assert sources["auth.py"].count("st.html(") == 1
    assert (
        "{json.dumps(method)}" in sources["auth.py"] and "{json.dumps(body)}" in sources["auth.py"]
    )
