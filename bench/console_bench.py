"""The console on a large metastore: each page's queries, its server-side render, the
whole page in a browser.

Run by hand: `.venv/bin/python bench/console_bench.py [--db sqlite,postgres] [--dags 500]
[--runs-per-dag 100] [--tasks-per-dag 20] [--no-browser] [--pages failures,why,...]`.

bench/console_seed.py builds the metastore (default 500 DAGs, 50,000 runs, 1,000,000
task instances) on SQLite (a temporary file) and on PostgreSQL (a scratch database on
127.0.0.1:5432, dropped at the end). Then, per page:
  - queries: the query functions the page calls, each timed 5 times after a warm-up
    run, without any cache; the page's figure is its slowest query (median of its runs)
    and the sum of its queries' medians;
  - render: `AppTest.run()` of the page with the result cache emptied first (what the
    server does for a new visitor), median of 3 after a warm-up;
  - browser: `dagwatch console` serving the metastore, Debian's Chromium through
    Playwright: from `goto` until the script has finished and the page's content is
    drawn, median of 3 after a warm-up (each visit a new session, so no cached results).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.console_seed import build  # noqa: E402
from console.queries import (  # noqa: E402
    alerts,
    audit,
    capacity,
    dags,
    detail,
    explain,
    failures,
    overview,
    parsing,
    problems,
    slas,
)
from engine.config import load_config  # noqa: E402
from engine.store import explain as explain_reads  # noqa: E402
from engine.store.db import Store  # noqa: E402
from engine.store.migrate import migrate  # noqa: E402

DAG = "dag_0003"
HOUR, DAY = timedelta(hours=1), timedelta(hours=24)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]  # fmt: skip
#: page -> (view file, url path, the query calls the page makes)
Query = Callable[[Store], Any]


def _dag_queries(store: Store) -> list[tuple[str, Query]]:
    grid = detail.grid(store, DAG, limit=25)
    newest = grid.runs.run_id.iloc[0]
    failed = grid.runs[grid.runs.state == "failed"].run_id
    with_log = failed.iloc[0] if len(failed) else newest
    return [
        ("dag_info", lambda s: detail.dag_info(s, DAG)),
        ("grid", lambda s: detail.grid(s, DAG, limit=25)),
        (
            "grid_table",
            lambda s: detail.grid_table(detail.dag_info(s, DAG), detail.grid(s, DAG, limit=25)),
        ),
        ("running_tasks", lambda s: detail.running_tasks(s, DAG)),
        ("gantt", lambda s: detail.gantt(s, DAG, newest)),
        ("run_durations", lambda s: detail.run_durations(s, DAG)),
        ("task_tries", lambda s: detail.task_tries(s, DAG, with_log, "task_00")),
        ("xcoms", lambda s: detail.xcoms(s, DAG, newest, "task_00")),
        ("why_panel", lambda s: explain.dag(s, DAG, config=CONFIG)),
    ]


#: the limits the explanations apply (the defaults)
CONFIG = load_config({})


def _newest_run(store: Store) -> str:
    return detail.grid(store, DAG, limit=1).runs.run_id.iloc[0]


def _why_queries(store: Store) -> list[tuple[str, Query]]:
    newest = _newest_run(store)

    def holders(s: Store) -> Any:
        with s.session(readonly=True) as session:
            return explain_reads.pool_holders(session, ["default_pool"])

    return [
        ("pick_run", lambda s: explain.pick_run(s, DAG)),
        ("pick_task", lambda s: explain.pick_task(s, DAG, newest)),
        ("run", lambda s: explain.run(s, DAG, newest, config=CONFIG)),
        ("task (upstream)", lambda s: explain.task(s, DAG, newest, "task_05", config=CONFIG)),
        ("dag", lambda s: explain.dag(s, DAG, config=CONFIG)),
        ("pool_holders", holders),
    ]


PAGES: dict[str, tuple[str, str, Callable[[Store], list[tuple[str, Query]]]]] = {
    "overview": (
        "overview",
        "/",
        lambda s: [("counts", overview.counts), ("heartbeats", overview.heartbeats)],
    ),
    "dags": (
        "dags",
        "/dags",
        lambda s: [
            ("filter_options", dags.filter_options),
            ("list_dags", lambda s: dags.list_dags(s, limit=50)),
            ("list_dags tag", lambda s: dags.list_dags(s, tag="domain_3", limit=50)),
            ("list_dags failed", lambda s: dags.list_dags(s, state="failed", limit=50)),
            ("dag_info", lambda s: detail.dag_info(s, "dag_0000")),
        ],
    ),
    "dag": ("dag", f"/dag?dag_id={DAG}", _dag_queries),
    "failures": (
        "failures",
        "/failures",
        lambda s: [
            ("by_signature 24 h", lambda s: failures.by_signature(s, "24 h")),
            ("by_signature 7 d", lambda s: failures.by_signature(s, "7 d")),
            ("summary 24 h", lambda s: failures.summary(s, "24 h")),
            ("failed_runs", problems.failed_runs),
        ],
    ),
    "why": ("why", f"/why?dag_id={DAG}&run_id={{newest}}", _why_queries),
    "tasks": (
        "tasks",
        "/tasks",
        lambda s: [("running", lambda s: problems.active_tasks(s, "running"))],
    ),
    "slas": (
        "slas",
        "/slas",
        lambda s: [
            ("runs_at_risk", slas.runs_at_risk),
            (
                "not_started",
                lambda s: slas.not_started(
                    s, grace=300.0, heartbeat_timeout=30.0, max_active_runs=16
                ),
            ),
            ("misses", slas.misses),
        ],
    ),
    "capacity": (
        "capacity",
        "/capacity",
        lambda s: [
            ("report_24h", lambda s: capacity.report(s, "24 h", 32)),
            ("now_slots", lambda s: capacity.now_slots(s, 32)),
        ],
    ),
    "capacity_7d": (
        "capacity",
        "/capacity?window=7 d",
        lambda s: [
            ("read_7d", lambda s: capacity.intervals(s, *_week())),
            ("report_7d", lambda s: capacity.report(s, "7 d", 32)),
        ],
    ),
    "alerts": (
        "alerts",
        "/alerts",
        lambda s: [
            ("outbox", lambda s: alerts.outbox(s, window=DAY)),
            ("routes", lambda s: alerts.routes(s, window=DAY)),
            ("pending", alerts.pending),
            ("delivery", lambda s: alerts.delivery(s, window=DAY, step=HOUR)),
            ("attempts", lambda s: alerts.attempts(s, 1)),
        ],
    ),
    "parsing": (
        "parsing",
        "/parsing",
        lambda s: [
            ("files", lambda s: parsing.files(s, interval_s=30.0)),
            ("import_errors", parsing.import_errors),
        ],
    ),
    "audit": ("audit", "/audit", lambda s: [("audit_log", audit.audit_log)]),
}


def _week() -> tuple[Any, Any]:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    return now - timedelta(days=7), now


def _median_time(call: Callable[[], Any], runs: int) -> float:
    call()  # warm-up: connections, statement caches, pages of the database file
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def time_queries(store: Store) -> dict[str, tuple[float, float, str]]:
    """page -> (slowest query, sum of its queries, the slowest one's name), seconds."""
    found = {}
    for page, (_view, _path, queries) in PAGES.items():
        timed = [(name, _median_time(lambda q=q: q(store), 5)) for name, q in queries(store)]
        slowest = max(timed, key=lambda item: item[1])
        found[page] = (slowest[1], sum(t for _, t in timed), slowest[0])
    return found


def time_renders(url: str, home: Path) -> dict[str, float]:
    """page -> median seconds of AppTest.run() with an empty result cache."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["DAGWATCH_HOME"] = str(home)
    os.environ["DAGWATCH__DATABASE__SQL_ALCHEMY_CONN"] = url
    found = {}
    for page, (view, path, _queries) in PAGES.items():

        def render(view: str = view, path: str = path) -> None:
            st.cache_data.clear()
            app = AppTest.from_file(str(ROOT / "console" / "app.py"), default_timeout=120)
            if "?" in path:
                for pair in path.split("?", 1)[1].split("&"):
                    name, value = pair.split("=", 1)
                    app.query_params[name] = unquote(value)
            app.switch_page(f"views/{view}.py")
            app.run()
            assert not app.exception, [e.value for e in app.exception]

        found[page] = _median_time(render, 3)
    return found


#: page -> its link in the navigation (in-app navigation keeps the session, as a user does)
NAV_LINKS = {
    "overview": "Overview",
    "dags": "DAGs",
    "dag": "DAG detail",
    "failures": "Failures",
    "why": "Why isn't it running?",
    "tasks": "Queued and running",
    "slas": "SLAs and deadlines",
    "capacity": "Pools and capacity",
    "alerts": "Alerts",
    "parsing": "Parsing",
    "audit": "Audit log",
}
#: page -> the title it draws first
TITLES = {
    "overview": "Overview",
    "dags": "DAGs",
    "dag": "DAG detail",
    "failures": "Failures",
    "why": "Why isn't it running?",
    "tasks": "Running task instances",
    "slas": "SLAs and deadlines",
    "capacity": "Pools and capacity",
    "capacity_7d": "Pools and capacity",
    "alerts": "Alerts",
    "parsing": "Parsing",
    "audit": "Audit log",
}
#: resolves once the page shows `title`, Streamlit's script has finished and the main
#: area has not changed for 400 ms; window.__drawn_at is when it last changed
#: (performance.now(), so from the navigation's start on a new visit)
_SETTLED = """(title) => {
    const main = document.querySelector('[data-testid="stMain"]');
    const h1 = main && main.querySelector('h1');
    const busy = document.querySelector('[data-testid="stStatusWidget"]')
        || document.querySelector('[data-stale="true"]');
    const size = main ? main.innerHTML.length : -1;
    const now = performance.now();
    if (!h1 || !h1.textContent.startsWith(title) || busy) {
        window.__size = -1;
        return false;
    }
    if (size !== window.__size) {
        window.__size = size;
        window.__drawn_at = now;
        return false;
    }
    return now - window.__drawn_at >= 400;
}"""


def _settled_at(page: Any, title: str) -> float:
    """Seconds (performance.now()) at which the page last changed before settling."""
    page.wait_for_function(_SETTLED, arg=title, timeout=60_000, polling=25)
    return page.evaluate("() => window.__drawn_at") / 1000


def time_browser(url: str, home: Path) -> dict[str, tuple[float, float]]:
    """page -> (a new visit: goto until drawn; a click on its link until drawn), median
    seconds in Chromium."""
    from playwright.sync_api import sync_playwright

    from tests.console.helpers import free_port, http_ok, stop, wait_for

    port = free_port()
    env = {**os.environ, "DAGWATCH_HOME": str(home), "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": url}
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "console", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    found = {}
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_ok(f"{base}/_stcore/health"), what="the console")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.goto(f"{base}/parsing")
            _settled_at(tab, TITLES["parsing"])  # (navigation links exist for every page)
            for page_name, (_view, path, _queries) in PAGES.items():
                back = "overview" if page_name != "overview" else "parsing"

                def visit(path: str = path, name: str = page_name) -> float:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(base + path)
                    title = "dag_" if name == "dag" else TITLES[name]
                    drawn = _settled_at(page, title)
                    page.close()
                    return drawn  # performance.now() counts from the navigation's start

                def click(name: str = page_name, back: str = back) -> float:
                    tab.get_by_role("link", name=NAV_LINKS[back], exact=True).click()
                    _settled_at(tab, TITLES[back])
                    started = tab.evaluate("() => performance.now()") / 1000
                    tab.get_by_role("link", name=NAV_LINKS[name], exact=True).click()
                    return _settled_at(tab, TITLES[name]) - started

                visit()  # warm-up
                visits = statistics.median(visit() for _ in range(3))
                clicks = float("nan")  # a page with a query (7 d) has no link of its own
                if page_name in NAV_LINKS:
                    click()  # warm-up
                    clicks = statistics.median(click() for _ in range(3))
                found[page_name] = (visits, clicks)
            browser.close()
    finally:
        stop(process)
    return found


def seed(store: Store, args: argparse.Namespace) -> tuple[dict[str, int], float]:
    """Migrate and fill the metastore at the sizes `args` asks for; (row counts, seconds)."""
    migrate(store)
    started = time.perf_counter()
    counts = build(
        store, dags=args.dags, runs_per_dag=args.runs_per_dag, tasks_per_dag=args.tasks_per_dag
    )
    return counts, time.perf_counter() - started


def _databases(kinds: list[str], scratch: Path) -> list[tuple[str, str, Callable[[], None]]]:
    found = []
    if "sqlite" in kinds:
        found.append(("SQLite", f"sqlite:///{scratch / 'bench.db'}", lambda: None))
    if "postgres" in kinds:
        from tests.helpers import create_pg_database, drop_pg_database

        url = create_pg_database("dagwatch_bench")
        found.append(("PostgreSQL", url, lambda url=url: drop_pg_database(url)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument("--dags", type=int, default=500)
    parser.add_argument("--runs-per-dag", type=int, default=100)
    parser.add_argument("--tasks-per-dag", type=int, default=20)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--pages", default="", help="only these pages (comma-separated)")
    args = parser.parse_args()
    if args.pages:
        wanted = args.pages.split(",")
        unknown = sorted(set(wanted) - set(PAGES))
        if unknown:
            parser.error(f"unknown pages {unknown}; pages are {', '.join(PAGES)}")
        for page in set(PAGES) - set(wanted):
            del PAGES[page]
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        home = scratch / "home"
        home.mkdir()
        for label, url, cleanup in _databases(args.db.split(","), scratch):
            try:
                store = Store(url)
                counts, took = seed(store, args)
                if store.engine.dialect.name == "postgresql":
                    with store.connect() as connection:
                        connection.exec_driver_sql("ANALYZE")
                print(f"\n## {label}: {counts} built in {took:.0f} s", flush=True)
                newest = quote(_newest_run(store), safe="")
                for page, (view, path, calls) in list(PAGES.items()):
                    PAGES[page] = (view, path.replace("{newest}", newest), calls)
                queries = time_queries(store)
                renders = time_renders(url, home)
                browser = {} if args.no_browser else time_browser(url, home)
                print(
                    "| page | slowest query (ms) | all queries (ms) | render (ms) "
                    "| browser, new visit (ms) | browser, from the menu (ms) |"
                )
                print("|---|---|---|---|---|---|")
                for page, (slowest, total, name) in queries.items():
                    visit, click = browser.get(page, (None, None))
                    shown = "- | -" if visit is None else f"{visit * 1000:.0f} | {click * 1000:.0f}"
                    print(
                        f"| {page} | {slowest * 1000:.0f} ({name}) | {total * 1000:.0f} | "
                        f"{renders[page] * 1000:.0f} | {shown} |",
                        flush=True,
                    )
                store.dispose()
            finally:
                cleanup()


if __name__ == "__main__":
    main()
