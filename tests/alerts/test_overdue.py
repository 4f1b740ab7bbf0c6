"""run_not_started: a run that should have started and did not is found with its reason,
raised once (a second pass, a new checker, a restarted `alerts dispatch` process never
raise it again), and routed and delivered like the other events."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from alerts import overdue
from alerts.dispatcher import Dispatcher
from alerts.events import DEFAULT_EVENTS, Event
from alerts.overdue import OverdueCheck, find_overdue
from engine.store.models import Dag, DagRun, Job, SlaMiss
from tests.alerts.conftest import alert_rows
from tests.helpers import run_cli, start_cli

NOW = datetime(2026, 1, 10, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)


def add_dag(store, dag_id: str, *, due: datetime, paused: bool = False, max_active_runs=None):
    """A scheduled DAG whose next run (logical date `due` - 1 h) may be created at `due`."""
    with store.session() as session:
        session.add(
            Dag(
                dag_id=dag_id,
                fileloc=f"/dags/{dag_id}.py",
                is_active=True,
                is_paused=paused,
                schedule="@hourly",
                serialized={},
                dag_hash="0" * 64,
                next_dagrun=due - HOUR,
                next_dagrun_data_interval_start=due - HOUR,
                next_dagrun_data_interval_end=due,
                next_dagrun_create_after=due,
                max_active_runs=max_active_runs,
            )
        )


def add_run(store, dag_id: str, run_id: str, state: str, at: datetime, run_type="scheduled"):
    with store.session() as session:
        session.add(
            DagRun(
                dag_id=dag_id,
                run_id=run_id,
                run_type=run_type,
                state=state,
                logical_date=at,
                queued_at=at,
                start_date=at if state == "running" else None,
                conf={},
            )
        )


def add_scheduler(store, heartbeat: datetime) -> None:
    with store.session() as session:
        session.add(
            Job(
                job_type="scheduler",
                state="running",
                hostname="h",
                pid=1,
                start_date=heartbeat,
                latest_heartbeat=heartbeat,
            )
        )


def found(store, now=NOW, grace=300.0):
    with store.session(readonly=True) as session:
        return find_overdue(
            session, now, grace=grace, heartbeat_timeout=30.0, default_max_active_runs=16
        )


def test_run_not_started_is_in_the_default_set():
    assert Event.RUN_NOT_STARTED in DEFAULT_EVENTS


def test_each_reason_in_words(store):
    add_scheduler(store, NOW - timedelta(seconds=5))
    add_dag(store, "paused", due=NOW - HOUR, paused=True)
    add_dag(store, "blocked", due=NOW - 2 * HOUR, max_active_runs=1)
    add_run(store, "blocked", "long_run", "running", NOW - 5 * HOUR)
    add_dag(store, "behind", due=NOW - timedelta(minutes=10))
    add_dag(store, "on_time", due=NOW - timedelta(minutes=4))  # within the grace
    add_dag(store, "future", due=NOW + HOUR)
    add_run(store, "manual_dag", "manual__1", "queued", NOW - HOUR, run_type="manual")
    add_dag(store, "manual_dag", due=NOW + HOUR, paused=True)
    rows = [
        (o.dag_id, o.run_id, o.created, o.reason, o.detail, o.late_by(NOW)) for o in found(store)
    ]
    assert rows == [
        ("blocked", f"scheduled__{(NOW - 3 * HOUR).isoformat()}", False, "max_active_runs",
         "max_active_runs 1 reached by long_run", 7200.0),
        ("manual_dag", "manual__1", True, "paused", "the DAG is paused", 3600.0),
        ("paused", f"scheduled__{(NOW - 2 * HOUR).isoformat()}", False, "paused",
         "the DAG is paused", 3600.0),
        ("behind", f"scheduled__{(NOW - timedelta(minutes=70)).isoformat()}", False,
         "scheduler_behind", "the scheduler is alive but has not started it (is its loop slow?)",
         600.0),
    ]  # fmt: skip


def test_no_scheduler_and_a_dag_catching_up(store):
    add_dag(store, "nightly", due=NOW - HOUR)
    add_dag(store, "catching_up", due=NOW - HOUR)
    add_run(store, "catching_up", "just_created", "running", NOW - timedelta(minutes=1))
    assert [(o.dag_id, o.reason, o.detail) for o in found(store)] == [
        ("nightly", "no_scheduler", "no scheduler is running")
    ]
    add_scheduler(store, NOW - timedelta(minutes=3))
    assert [o.detail for o in found(store)] == ["no scheduler heartbeat for 180 s"]


def miss_rows(store):
    with store.session(readonly=True) as session:
        return session.execute(
            select(SlaMiss.kind, SlaMiss.dag_id, SlaMiss.deadline, SlaMiss.state).order_by(
                SlaMiss.id
            )
        ).all()


def test_raised_once_by_any_number_of_passes_and_checkers(store, alerts_config, receiver):
    config = alerts_config(alerts__routes={"oncall": {"urls": [receiver.url()]}})
    add_dag(store, "nightly", due=NOW - HOUR, paused=True)
    assert [o.dag_id for o in OverdueCheck(config).run(store, NOW)] == ["nightly"]
    assert OverdueCheck(config).run(store, NOW + HOUR) == []  # a new process: nothing new
    assert miss_rows(store) == [(overdue.KIND, "nightly", NOW - HOUR, "paused")]
    (alert,) = alert_rows(store, event="run_not_started")
    assert (alert.route, alert.dag_id, alert.severity) == ("oncall", "nightly", "error")
    assert alert.payload["late_by"] == 3600.0
    Dispatcher(config, store).run_once(NOW)
    (post,) = receiver.wait_for(1)
    assert (
        post.title
        == f"[dagwatch] nightly: run scheduled__{(NOW - 2 * HOUR).isoformat()} has not started"
    )
    assert "the DAG is paused" in post.message


def test_a_route_without_the_event_gets_nothing_but_the_miss_is_recorded(store, alerts_config):
    config = alerts_config(
        alerts__routes={"chat": {"urls": ["json://127.0.0.1:9/x"], "events": ["task_failed"]}}
    )
    add_dag(store, "nightly", due=NOW - HOUR)
    OverdueCheck(config).run(store, NOW)
    assert alert_rows(store) == []
    assert len(miss_rows(store)) == 1


@pytest.fixture
def dispatch_env(cli_env, store, receiver):
    url = store.engine.url.render_as_string(hide_password=False)
    return {
        **cli_env,
        "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": url,
        "DAGWATCH__ALERTS__ROUTES": json.dumps({"oncall": {"urls": [receiver.url()]}}),
    }


def _dispatch(env, log) -> subprocess.Popen:
    return start_cli(
        "alerts",
        "dispatch",
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(30)


def test_alerts_dispatch_raises_it_once_across_a_restart(store, dispatch_env, receiver, tmp_path):
    """The scheduler is down: `alerts dispatch` pages it; restarted, it does not again."""
    assert run_cli("db", "migrate", env=dispatch_env).returncode == 0
    now = datetime.now(UTC).replace(microsecond=0)
    add_dag(store, "nightly", due=now - HOUR)
    with (tmp_path / "dispatch.log").open("wb") as log:
        first = _dispatch(dispatch_env, log)
        try:
            receiver.wait_for(1, timeout=90)
        finally:
            _stop(first)
        add_dag(store, "hourly", due=now - HOUR)  # proves the restarted process made a pass
        second = _dispatch(dispatch_env, log)
        try:
            receiver.wait_for(2, timeout=90)
            time.sleep(2)  # room for a repeat, if there were one
        finally:
            _stop(second)
    titles = sorted(post.title for post in receiver.delivered)
    assert len(titles) == 2, titles
    # one incident per run: "<dag> <run_id>: run did not start"
    assert [(t.split(" ")[0], t.rsplit(": ", 1)[1]) for t in titles] == [
        ("hourly", "run did not start"),
        ("nightly", "run did not start"),
    ], titles
    assert all("no scheduler is running" in post.message for post in receiver.delivered)
    assert len(alert_rows(store, event="run_not_started")) == 2
