"""End to end in a real browser: `dagwatch standalone` with the console on a free loopback
port, driven by Playwright through Debian's Chromium (never a browser of its own).

It logs in, triggers a DAG from the page, watches its run turn green in the grid without
a reload (the grid is a fragment that refreshes itself: AppTest cannot show that), opens a
task's log, and saves a screenshot of each page under the test's temporary directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.console.helpers import http_ok, password_console_env, stop, wait_for
from tests.helpers import start_cli

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
DAG = """
import pendulum
from engine import DAG, BashOperator

with DAG("e2e_quick", schedule=None, start_date=pendulum.datetime(2026, 1, 1), tags=["e2e"]):
    BashOperator(task_id="say_hello", bash_command="echo hello-from-the-e2e-task")
"""
#: screenshot name -> the page's link in the navigation (a link keeps the logged-in session)
PAGES = {
    "overview": "Overview",
    "dags": "DAGs",
    "dag": "DAG detail",
    "failures": "Failures",
    "tasks": "Queued and running",
    "why": "Why isn't it running?",
    "slas": "SLAs and deadlines",
    "capacity": "Pools and capacity",
    "alerts": "Alerts",
    "parsing": "Parsing",
    "audit": "Audit log",
}
#: text a page shows once its script has drawn it (a click in the menu answers before)
DRAWN = {
    "capacity": "The last 24 h",
    "slas": "Should have started and did not",
    "alerts": "Delivery per channel",
}
GREEN = "rgb(46, 125, 50)"  # charts.STATE_COLOURS["success"]


def _need(reason: str) -> None:
    """Outside CI a missing browser skips (saying why); in CI it is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    print(reason)
    pytest.skip(reason)


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        _need(f"{CHROMIUM} is missing: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("the playwright package is missing: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def standalone(home, cli_env, store, tmp_path):
    """`dagwatch standalone` with password auth and one user, on the test's metastore
    (SQLite or PostgreSQL); yields the console's URL."""
    dags = home / "dags"
    dags.mkdir()
    (dags / "e2e.py").write_text(textwrap.dedent(DAG))
    env = password_console_env(cli_env, store, DAGWATCH__CONSOLE__REFRESH_SECONDS="1")
    port = env["DAGWATCH__CONSOLE__PORT"]
    log = tmp_path / "standalone.log"
    with log.open("wb") as out:
        process = start_cli(
            "standalone",
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: f"console: {url}" in log.read_text(), what="the console URL")
            wait_for(lambda: http_ok(f"{url}/_stcore/health"), what="the console to serve")
            yield url
        finally:
            stop(process)


def _settle(page) -> None:
    """Wait until Streamlit has finished running the page's script."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=60_000)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000
    )


def test_log_in_trigger_watch_the_run_turn_green_and_read_its_log(standalone, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{standalone}/dag?dag_id=e2e_quick")  # a deep link, as in an alert
    page.get_by_label("Username").fill("sre")
    page.get_by_label("Password", exact=True).fill("n1ght-0wl")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Signed in as").wait_for(timeout=60_000)
    page.get_by_role("heading", name="e2e_quick").wait_for(timeout=60_000)
    _settle(page)
    page.get_by_role("tab", name="Actions").click()
    page.get_by_role("button", name="Trigger e2e_quick").click()
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text(re.compile("triggered run manual__")).wait_for(timeout=60_000)
    page.evaluate("() => { window.__not_reloaded = true; }")
    page.get_by_role("tab", name="Grid").click()
    run_cell = page.locator('[data-testid="stTable"] tbody tr').first.locator("td").first
    # the grid is a fragment: it redraws itself until the run has succeeded
    page.wait_for_function(
        """(green) => {
            const row = document.querySelector('[data-testid="stTable"] tbody tr');
            const cell = row && row.querySelector('td');
            return cell && cell.textContent.trim() === 'ok'
                && getComputedStyle(cell).backgroundColor === green;
        }""",
        arg=GREEN,
        timeout=90_000,
    )
    assert run_cell.text_content().strip() == "ok"
    assert page.evaluate("() => window.__not_reloaded === true"), "the page was reloaded"

    page.get_by_role("tab", name="Task instance").click()
    page.get_by_text("hello-from-the-e2e-task").first.wait_for(timeout=60_000)
    # the rendered bash_command, as well as the log line it printed
    page.get_by_text("echo hello-from-the-e2e-task").first.wait_for(timeout=60_000)

    for name, link in PAGES.items():
        page.get_by_role("link", name=link, exact=True).click()
        if name in DRAWN:
            page.get_by_text(DRAWN[name]).first.wait_for(timeout=60_000)
        _settle(page)
        if name == "why":  # the answer for the DAG just run: its next run
            page.get_by_label("DAG id").fill("e2e_quick")
            page.get_by_label("DAG id").press("Enter")
            page.get_by_text("it runs only when triggered").first.wait_for(timeout=60_000)
        if name == "parsing":  # the parse time of the one DAG file, as a bar
            page.get_by_text("e2e.py").first.wait_for(timeout=60_000)
        assert page.locator('[data-testid="stException"]').count() == 0, name
        page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(PAGES)
