"""A real `dagwatch scheduler` pages through routes: an HTTP receiver and an SMTP sink on
loopback get exactly the pages an on-call engineer should get, and nothing else."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time
from datetime import UTC, datetime

import pytest

from engine import api, runtime
from engine.parsing.parser import process_folders
from engine.store import runs
from tests.alerts.conftest import alert_rows
from tests.helpers import run_cli, start_cli

DAG_FILE = """
import time
from datetime import timedelta
from engine import DAG, task

with DAG("paged", schedule=None, tags=["critical"]):
    @task(retries=2, retry_delay=timedelta(0))
    def flaky():
        raise RuntimeError("the upstream API said no")

    @task(sla=timedelta(seconds=1))
    def late():
        time.sleep(6)

    flaky()
    late()
"""


@pytest.fixture
def paged(store, environ, receiver, smtp_sink):
    config = runtime.get_config().with_overrides(
        core__load_examples=False, core__dags_are_paused_at_creation=False
    )
    folder = config["core.dags_folder"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "paged.py").write_text(textwrap.dedent(DAG_FILE))
    assert process_folders(store, config).import_errors == 0
    routes = {
        "oncall": {"urls": ["env:PAGER_URL"], "tags": ["critical"]},
        "mail": {"urls": ["env:MAIL_URL"], "events": ["dag_run_failed"]},
    }
    return {
        **environ,
        "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        "DAGWATCH__SCHEDULER__LOOP_INTERVAL": "0.2",
        "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": store.engine.url.render_as_string(False),
        "DAGWATCH__ALERTS__ROUTES": json.dumps(routes),
        # a page per event (group_by = []): what these tests count; incidents, the
        # default, are tested through the scheduler in test_incidents.py
        "DAGWATCH__ALERTS__GROUP_BY": "",
        "PAGER_URL": receiver.url("pager"),
        "MAIL_URL": smtp_sink.url(),
    }


def _first_sla_page(receiver, timeout: float = 60.0):
    """The first SLA-miss page, whatever arrived before it (the failure pages may)."""
    for count in range(1, 4):
        posts = receiver.wait_for(count, timeout=timeout)
        sla_posts = [p for p in posts if "sla" in f"{p.title} {p.message}".lower()]
        if sla_posts:
            return sla_posts[0]
    raise AssertionError(f"no SLA page among {[p.title for p in posts]}")


def _ended_at(store, run_id: str, task_id: str) -> datetime:
    with store.session() as session:
        (ti,) = [
            t for t in runs.get_task_instances(session, "paged", run_id) if t.task_id == task_id
        ]
        return ti.end_date


@pytest.mark.slow
def test_a_failing_run_pages_once_per_event_and_the_sla_miss_before_the_task_ends(
    store, paged, receiver, smtp_sink
):
    run_id = api.trigger_dag(store, "paged", actor="test").run_id
    received_at: dict[str, datetime] = {}

    process = start_cli(
        "scheduler",
        "--drain",
        env=paged,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        sla_post = _first_sla_page(receiver)
        received_at["sla"] = datetime.now(UTC)
        output, _ = process.communicate(timeout=90)
    finally:
        process.kill()
    assert process.returncode == 0, output

    # The SLA page arrived while `late` was still sleeping, not when it ended.
    assert "late" in sla_post.title + sla_post.message
    assert received_at["sla"] < _ended_at(store, run_id, "late")

    # One page per event for the on-call route: the SLA miss, the final failure of
    # `flaky` (no page for its two retries) and the run's failure.
    posts = receiver.posts
    texts = [f"{post.title}\n{post.message}" for post in posts]
    assert len(posts) == 3, texts
    (failure,) = [t for t in texts if "flaky" in t]
    assert "the upstream API said no" in failure and "paged" in failure
    assert run_id in failure or run_id.replace(":", "%3A").replace("+", "%2B") in failure
    assert sum("retry" in t.lower() for t in texts) == 0
    assert {post.status for post in posts} == {200}

    # The mail route asked only for the run's failure.
    (mail,) = smtp_sink.texts()
    assert "paged" in mail and "failed" in mail.lower()

    rows = alert_rows(store)
    assert sorted((r.route, r.event, r.status) for r in rows) == [
        ("mail", "dag_run_failed", "sent"),
        ("oncall", "dag_run_failed", "sent"),
        ("oncall", "sla_missed", "sent"),
        ("oncall", "task_failed", "sent"),
    ]
    for row in rows:
        assert "PAGER_URL" not in json.dumps(row.payload)
        # the receiver's port as a number of its own (a duration's digits may hold it)
        assert not re.search(rf"(?<![\d.]){receiver.port}(?!\d)", json.dumps(row.payload))


@pytest.mark.slow
def test_a_restarted_scheduler_does_not_page_again(store, paged, receiver, smtp_sink):
    run_id = api.trigger_dag(store, "paged", actor="test").run_id
    routes = json.loads(paged["DAGWATCH__ALERTS__ROUTES"])
    # The events of the first run only: with its durations learned, the second run may also
    # be forecast to miss its SLA (a deadline_at_risk page), if the restarted scheduler
    # looks before the SLA's one second is over; whether it does is a matter of timing.
    routes["oncall"]["events"] = ["sla_missed", "task_failed", "dag_run_failed"]
    paged = {
        **paged,
        "DAGWATCH__ALERTS__GROUP_WINDOW": "0",  # the next run pages at once
        "DAGWATCH__ALERTS__ROUTES": json.dumps(routes),
    }
    first = run_cli("scheduler", "--drain", env=paged, timeout=90)
    assert first.returncode == 0, first.stderr
    pages = len(receiver.posts)
    assert pages == 3

    api.trigger_dag(store, "paged", actor="test", logical_date=datetime.now(UTC))
    # A restart over the finished run and a new one: only the new run pages.
    second = run_cli("scheduler", "--drain", env=paged, timeout=90)
    assert second.returncode == 0, second.stderr
    time.sleep(0.2)
    new_posts = receiver.posts[pages:]
    assert len(new_posts) == 3
    assert all(run_id not in f"{p.title}{p.message}" for p in new_posts)
