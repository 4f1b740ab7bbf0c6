"""Where a new tab's time goes: from the navigation's start to the overview's key numbers.

Run by hand: `.venv/bin/python bench/console_cold.py [--db sqlite|postgres] [--dags 500]
[--runs-per-dag 100] [--tasks-per-dag 20] [--visits 5] [--baseline DIR]`.

It builds the benchmark metastore (bench/console_seed.py), starts `dagwatch console` on
it, and opens the overview in Debian's Chromium `--visits` times in two ways:
  - new browser: a fresh browser context each time (nothing cached: a first visit);
  - new tab: a new tab of one browser that has seen the console before (its static files
    come from the HTTP cache, as when an on-call engineer clicks an alert's link).
For each visit it records, from the navigation's start (performance.now()): the HTML
received, DOMContentLoaded (Streamlit's JavaScript loaded), the websocket open, its
first message (the session exists), the last message of the first script run, and the
key numbers drawn (the metric "failed runs (24 h)" on the page). Medians are printed.
`--baseline DIR` also starts another version's console (a tree from `git archive REV |
tar -x -C DIR`) and visits the two in turn, so both see the same load on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.console_bench import FLAGS, _databases, seed  # noqa: E402
from engine.store.db import Store  # noqa: E402

#: counts every websocket message's arrival, before Streamlit's own code runs
_WATCH_SOCKET = """(() => {
    const Native = window.WebSocket;
    window.__ws = {messages: []};
    window.WebSocket = function (...args) {
        const socket = new Native(...args);
        window.__ws.created = performance.now();
        socket.addEventListener('open', () => { window.__ws.open = performance.now(); });
        socket.addEventListener('message', () => { window.__ws.messages.push(performance.now()); });
        return socket;
    };
    window.WebSocket.prototype = Native.prototype;
    Object.assign(window.WebSocket, Native);
})()"""
#: performance.now() once the overview shows its key numbers, else false
_KEY_NUMBERS = """() => {
    const labels = document.querySelectorAll('[data-testid="stMetricLabel"]');
    const shown = [...labels].some((label) => label.textContent.includes('failed runs (24 h)'));
    return shown ? performance.now() : false;
}"""
_TIMELINE = """() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const messages = window.__ws.messages;
    return {html: nav.responseEnd, scripts_loaded: nav.domContentLoadedEventEnd,
            socket_open: window.__ws.open, first_message: messages[0],
            last_message: messages[messages.length - 1]};
}"""
STEPS = ("html", "scripts_loaded", "socket_open", "first_message", "last_message", "numbers")


def _visit(context: Any, url: str) -> dict[str, float]:
    page = context.new_page()
    page.goto(url)
    drawn = page.wait_for_function(_KEY_NUMBERS, timeout=60_000, polling=10).json_value()
    timeline = page.evaluate(_TIMELINE)
    page.close()
    return {**timeline, "numbers": drawn}


def _start(url: str, home: Path, tree: Path | None) -> tuple[subprocess.Popen, str]:
    """`dagwatch console` on a free port: this tree's, or (`tree`) another version's."""
    from tests.console.helpers import free_port, http_ok, wait_for

    port = free_port()
    env = {**os.environ, "DAGWATCH_HOME": str(home), "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": url}
    if tree is not None:  # `-m` puts the working directory first: run it from that tree
        env["PYTHONPATH"] = str(tree)
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "console", "--port", str(port)],
        env=env,
        cwd=tree or ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/"
    wait_for(lambda: http_ok(f"{base}_stcore/health"), timeout=120, what="the console")
    return process, base


def time_cold(
    url: str, home: Path, visits: int, baseline: Path | None
) -> dict[tuple[str, str], dict]:
    """(version, kind) -> step -> median milliseconds from the navigation's start; with a
    baseline tree, its console is visited in turn with this one (same load on both)."""
    from playwright.sync_api import sync_playwright

    from tests.console.helpers import stop

    trees = {"now": None, **({"baseline": baseline} if baseline else {})}
    consoles = {}
    found: dict[tuple[str, str], dict] = {}
    try:
        for version, tree in trees.items():
            consoles[version] = _start(url, home, tree)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            runs: dict[tuple[str, str], list[dict[str, float]]] = {}
            seen = {}
            for version, (_process, base) in consoles.items():
                seen[version] = browser.new_context()  # one browser per version: own cache
                seen[version].add_init_script(_WATCH_SOCKET)
                _visit(seen[version], base)  # warm-up: the first session, the HTTP cache
            for _ in range(visits):
                for version, (_process, base) in consoles.items():
                    fresh = browser.new_context()
                    fresh.add_init_script(_WATCH_SOCKET)
                    runs.setdefault((version, "new browser"), []).append(_visit(fresh, base))
                    fresh.close()
                    runs.setdefault((version, "new tab"), []).append(_visit(seen[version], base))
            browser.close()
        for key, timed in runs.items():
            found[key] = {step: statistics.median(run[step] for run in timed) for step in STEPS}
    finally:
        for process, _base in consoles.values():
            stop(process)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument("--dags", type=int, default=500)
    parser.add_argument("--runs-per-dag", type=int, default=100)
    parser.add_argument("--tasks-per-dag", type=int, default=20)
    parser.add_argument("--visits", type=int, default=5)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="Another version's source tree (git archive REV | tar -x -C DIR), visited in turn.",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        home = scratch / "home"
        home.mkdir()
        for label, url, cleanup in _databases([args.db], scratch):
            try:
                store = Store(url)
                counts, took = seed(store, args)
                store.dispose()
                print(f"## {label}: {counts} built in {took:.0f} s", flush=True)
                found = time_cold(url, home, args.visits, args.baseline)
                print("| version | visit | " + " | ".join(STEPS) + " |")
                print("|---" * (len(STEPS) + 2) + "|")
                for (version, kind), steps in sorted(found.items()):
                    cells = " | ".join(f"{steps[step]:.0f}" for step in STEPS)
                    print(f"| {version} | {kind} | {cells} |")
            finally:
                cleanup()


if __name__ == "__main__":
    main()
