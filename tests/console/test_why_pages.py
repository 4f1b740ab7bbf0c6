"""The Why, Failures and Parsing pages, and the why panel on the DAG page, through
Streamlit's AppTest on the seeded metastore (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.console.seed_why import seed_why
from tests.console.test_pages import metrics, rendered


@pytest.fixture
def why(seeded, config):
    return seed_why(seeded, config)


def texts(app, kind: str) -> str:
    return "\n".join(element.value for element in getattr(app, kind))


@pytest.mark.parametrize("page", ["why", "failures", "parsing", "import_errors"])
def test_each_new_page_renders(why, console_app, page):
    rendered(console_app(page, dag_id="limited"))


def test_why_page_names_the_run_in_the_way(why, console_app):
    app = rendered(console_app("why", dag_id="limited", run_id="l2_queued"))
    assert "is at max_active_runs (1)" in texts(app, "warning")
    assert "running now (1 of 1): l1_running" in texts(app, "markdown")
    runs = app.dataframe[0].value
    assert list(runs.run_id) == ["l1_running"]


def test_why_page_names_the_pool_holders(why, console_app):
    app = rendered(console_app("why", dag_id="limited", run_id="l1_running", task_id="backup"))
    assert "pool 'db' is full: it needs 1 open slot(s)" in texts(app, "warning")
    holders = app.dataframe[0].value
    assert list(holders.task_id) == ["load", "render"]
    assert list(holders.run_id) == ["l1_running", "r5_db"]
    assert holders.held_s.iloc[0] >= 1200  # 20 min when seeded, a little more now


def test_why_page_without_a_run_explains_the_dags_next_run(why, console_app):
    app = rendered(console_app("why", dag_id="reports"))
    assert "schedule None: it runs only when triggered" in texts(app, "info")
    app = rendered(console_app("why", dag_id="nope"))
    assert "DAG 'nope' not found" in texts(app, "error") or "nope" in texts(app, "error")


def test_dag_page_shows_why_its_next_run_waits(why, console_app):
    app = rendered(console_app("dag", dag_id="limited"))
    assert "run l2_queued is queued: run limit" in texts(app, "warning")
    app = rendered(console_app("dag", dag_id="limited", run_id="l2_queued"))
    assert "is at max_active_runs (1)" in texts(app, "warning")


def test_task_instance_tab_shows_why_it_waits(why, console_app):
    app = rendered(
        console_app(
            "dag", dag_id="limited", run_id="l1_running", task_id="backup", tab="Task instance"
        )
    )
    assert "pool 'db' is full" in texts(app, "warning")
    assert list(app.dataframe[0].value.task_id) == ["load", "render"]


def test_queued_and_running_links_each_row_to_its_answer(why, console_app):
    app = rendered(console_app("tasks", state="running"))
    table = app.dataframe[0].value
    row = table.set_index("task_id").loc["load"]
    assert row["why"] == "./why?dag_id=limited&run_id=l1_running"  # what else its run awaits
    app = rendered(console_app("tasks", state="queued"))
    queued = app.dataframe[0].value.set_index("task_id").loc["render"]
    assert queued["why"] == "./why?dag_id=reports&run_id=r4_queued&task_id=render&map_index=-1"


def test_failures_page_groups_three_failures_in_one_row(why, console_app):
    app = rendered(console_app("failures"))
    shown = metrics(app)
    assert shown["failed tries (24 h)"] == "5"
    assert shown["distinct problems (signatures)"] == "3"
    assert shown["DAGs hit"] == "2"
    groups = app.dataframe[0].value
    top = groups.iloc[0]
    assert top.failures == 3
    assert top.signature.startswith("FileNotFoundError: [Errno <n>] No such file")
    assert top.example == ("./dag?dag_id=limited&run_id=l0_failed&task_id=load&tab=Task%20instance")
    app.radio(key="failures_window").set_value("7 d").run()
    assert metrics(app)["failed tries (7 d)"] == "6"
    assert app.dataframe[0].value.failures.iloc[0] == 4


def test_parsing_page_shows_parse_times_and_import_errors(why, console_app):
    app = rendered(console_app("parsing"))
    shown = metrics(app)
    assert shown["import errors"] == "1"  # old_broken.py (the seed's broken.py is gone)
    assert shown["DAG files"] == "3"
    assert shown["files not parsed recently"] == "0"
    files = app.dataframe[0].value
    assert files.fileloc.iloc[0].endswith("slow.py") and files.parse_duration_s.iloc[0] == 2.5
    assert "ModuleNotFoundError: No module named 'pandas_extra'" in texts(app, "code")
    assert "first seen" in texts(app, "caption")
