"""A seeded metastore (SQLite and PostgreSQL) for the console's queries and pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.console.seed import Seeded, seed


@pytest.fixture(scope="session", autouse=True)
def _component_manifests_scanned_once() -> Iterator[None]:
    """Every AppTest looks for Streamlit components in the metadata of every installed
    package (about a second of CPU each time); the packages do not change during a test
    session, so the first scan's result is handed to every later one."""
    try:
        from streamlit.components.v2 import manifest_scanner
    except ImportError:  # a Streamlit without installed-component discovery
        yield
        return
    scan = manifest_scanner.scan_component_manifests
    found: list[Any] = []

    def scan_once(*args: Any, **kwargs: Any) -> list[Any]:
        if not found:
            found.append(scan(*args, **kwargs))
        return list(found[0])

    mp = pytest.MonkeyPatch()
    mp.setattr(manifest_scanner, "scan_component_manifests", scan_once)
    yield
    mp.undo()


@pytest.fixture
def seeded(store, config) -> Seeded:
    return seed(store, config)


@pytest.fixture
def store_env(cli_env, store) -> dict[str, str]:
    """The CLI's environment, pointed at the test's metastore (SQLite or PostgreSQL)."""
    url = store.engine.url.render_as_string(hide_password=False)
    return {**cli_env, "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": url}


APP = Path(__file__).resolve().parents[2] / "console" / "app.py"


@pytest.fixture
def console_app(seeded, home, monkeypatch) -> Iterator[Callable[..., Any]]:
    """A factory of AppTests of the console on the seeded metastore: `console_app(page,
    user=None, auth="password", **query_params)`; a user is put in the session as if
    they had logged in."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from console import state
    from console.users import User

    url = seeded.store.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("DAGWATCH_HOME", str(home))
    monkeypatch.setenv("DAGWATCH__DATABASE__SQL_ALCHEMY_CONN", url)
    st.cache_data.clear()

    def make(
        page: str, user: tuple[str, str] | None = ("olga", "operator"), auth: str = "password",
        **params: str,
    ) -> AppTest:  # fmt: skip
        monkeypatch.setenv("DAGWATCH__CONSOLE__AUTH", auth)
        app = AppTest.from_file(str(APP), default_timeout=60)
        if user is not None:
            app.session_state["user"] = User(*user)
        for name, value in params.items():
            app.query_params[name] = value
        app.switch_page(f"views/{page}.py")
        return app

    yield make
    st.cache_data.clear()
    state._store(url).dispose()
    state._store.clear()
