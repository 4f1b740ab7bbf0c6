"""Incidents: a run's alerts page once, a new incident never waits for an old one's window,
resolved follows when the work succeeds again, and every page of an incident carries its key.

The end-to-end tests run a real `dagwatch scheduler` against a loopback HTTP receiver."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from datetime import timedelta

import pytest

from alerts import incidents, outbox
from alerts.delivery import DEDUP_HEADER
from alerts.dispatcher import Dispatcher
from alerts.events import Event
from alerts.routes import compose, load_routes, parse_route
from engine import api, runtime
from engine.exceptions import ConfigError
from engine.parsing.parser import process_folders
from engine.store import runs
from engine.store.models import AlertIncident
from tests.alerts.conftest import T0, alert_rows, raise_alert
from tests.helpers import start_cli

STORM = """
from engine import DAG, task

with DAG("storm", schedule=None):
    for number in range(20):
        @task(task_id=f"part_{number:02d}")
        def part():
            raise RuntimeError("the warehouse is down")

        part()
"""

FLAKY = """
import os
from engine import DAG, task

with DAG("flaky", schedule=None, max_active_runs=1):
    @task
    def load():
        if os.path.exists(os.environ["FLAKY_FLAG"]):
            raise RuntimeError("bad rows")

    load()
"""


def _key(post) -> str:
    return {k.lower(): v for k, v in post.headers.items()}[DEDUP_HEADER.lower()]


@pytest.fixture
def scheduler_env(store, environ, receiver, home):
    """`start(dag_file, **route)`: parse the DAG, start a real scheduler paging the receiver."""
    processes: list[subprocess.Popen] = []

    def start(source: str, name: str, **route) -> subprocess.Popen:
        config = runtime.get_config().with_overrides(
            core__load_examples=False, core__dags_are_paused_at_creation=False
        )
        folder = config["core.dags_folder"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        assert process_folders(store, config).import_errors == 0
        env = {
            **environ,
            "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
            "DAGWATCH__CORE__PARALLELISM": "32",
            "DAGWATCH__SCHEDULER__LOOP_INTERVAL": "0.2",
            "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": store.engine.url.render_as_string(False),
            "DAGWATCH__ALERTS__ROUTES": json.dumps(
                {"oncall": {"urls": [receiver.url("pager")], **route}}
            ),
            "FLAKY_FLAG": str(home / "flaky.flag"),
        }
        process = start_cli(
            "scheduler",
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _ended(store, dag_id: str, run_id: str):
    with store.session() as session:
        return max(t.end_date for t in runs.get_task_instances(session, dag_id, run_id))


@pytest.mark.slow
def test_a_twenty_task_failure_is_one_page_listing_the_twenty_tasks(store, scheduler_env, receiver):
    scheduler_env(STORM, "storm", group_wait=15, group_interval=5)
    run_id = api.trigger_dag(store, "storm", actor="test").run_id
    (page,) = receiver.wait_for(1, timeout=120)
    time.sleep(8)  # longer than group_interval: no update follows (nothing new to tell)
    assert len(receiver.posts) == 1, [p.title for p in receiver.posts]
    assert page.title.startswith("storm ")
    assert "20 tasks failed" in page.title and "run failed" in page.title
    listed = [line for line in page.message.splitlines() if line.startswith("- part_")]
    assert len(listed) == 20
    assert all("the warehouse is down" in line for line in listed)
    assert "runs?dag_id=storm" in page.message
    (incident,) = _incidents(store)
    assert _key(page) == incident.key and incident.key in page.message
    assert incident.alerts == 21 and incident.run_id == run_id
    members = alert_rows(store, incident_id=incident.id)
    assert {row.status for row in members} == {outbox.SUPPRESSED}


@pytest.mark.slow
def test_a_second_run_failing_later_pages_within_group_wait_not_the_old_interval(
    store, scheduler_env, receiver, home
):
    (home / "flaky.flag").write_text("fail")
    scheduler_env(FLAKY, "flaky", group_wait=2, group_interval=600)
    first = api.trigger_dag(store, "flaky", actor="test").run_id
    receiver.wait_for(1, timeout=90)
    second = api.trigger_dag(store, "flaky", actor="test").run_id
    posts = receiver.wait_for(2, timeout=60)
    arrived = time.time()
    failed_at = _ended(store, "flaky", second).timestamp()
    # within group_wait (2 s) plus a busy machine's slack, far from group_interval (600 s)
    assert arrived - failed_at < 30
    assert first in posts[0].title and second in posts[1].title
    assert _key(posts[0]) != _key(posts[1])


@pytest.mark.slow
def test_resolved_is_sent_when_the_work_succeeds_again_with_the_incident_key(
    store, scheduler_env, receiver, home
):
    flag = home / "flaky.flag"
    flag.write_text("fail")
    scheduler_env(FLAKY, "flaky", group_wait=1, group_interval=1, send_resolved=True)
    api.trigger_dag(store, "flaky", actor="test")
    (failure,) = receiver.wait_for(1, timeout=90)
    flag.unlink()
    api.trigger_dag(store, "flaky", actor="test")
    posts = receiver.wait_for(2, timeout=90)
    resolved = posts[1]
    assert resolved.title.startswith("Resolved: flaky")
    assert resolved.type == "success"
    assert _key(resolved) == _key(failure)
    (incident,) = _incidents(store)
    assert incident.status == incidents.RESOLVED and incident.open_key is None
    time.sleep(3)
    assert len(receiver.posts) == 2  # the successful run itself pages nothing


def _incidents(store) -> list[AlertIncident]:
    with store.session(readonly=True) as session:
        rows = list(session.query(AlertIncident).order_by(AlertIncident.id))
        session.expunge_all()
    return rows


# -- through the dispatcher, on a fixed clock ----------------------------------------------


def _grouped(alerts_config, receiver, **route):
    return alerts_config(
        alerts__group_by="dag_id,run_id",
        alerts__routes={"oncall": {"urls": [receiver.url()], **route}},
        alerts__retry_delay=1,
    )


def test_the_first_page_waits_group_wait_and_lists_at_most_twenty_tasks(
    store, alerts_config, receiver
):
    config = _grouped(alerts_config, receiver, group_wait=5, group_interval=60)
    for number in range(25):
        raise_alert(store, config, task_id=f"t{number:02d}", now=T0 + timedelta(seconds=1))
    dispatcher = Dispatcher(config, store)
    assert dispatcher.run_once(T0 + timedelta(seconds=2)).sent == 0  # within group_wait
    assert dispatcher.run_once(T0 + timedelta(seconds=6)).sent == 1
    (page,) = receiver.posts
    assert page.title == "etl manual__1: 25 tasks failed"
    assert sum(line.startswith("- t") for line in page.message.splitlines()) == 20
    assert "… and 5 more task alert(s)" in page.message
    # a later alert of the same run: an update, batched to group_interval after the page
    raise_alert(store, config, task_id="late", now=T0 + timedelta(seconds=10))
    assert dispatcher.run_once(T0 + timedelta(seconds=30)).sent == 0
    assert dispatcher.run_once(T0 + timedelta(seconds=67)).sent == 1
    update = receiver.posts[1]
    assert update.title.startswith("Update: etl manual__1: 26 tasks failed")
    assert "26 alert(s)" in update.message and "1 new" in update.message
    assert _key(update) == _key(page)


def test_another_run_is_its_own_incident_and_does_not_wait(store, alerts_config, receiver):
    config = _grouped(alerts_config, receiver, group_wait=5, group_interval=600)
    raise_alert(store, config, run_id="r1", now=T0)
    dispatcher = Dispatcher(config, store)
    assert dispatcher.run_once(T0 + timedelta(seconds=5)).sent == 1
    raise_alert(store, config, run_id="r2", now=T0 + timedelta(seconds=60))
    assert dispatcher.run_once(T0 + timedelta(seconds=65)).sent == 1
    assert [p.title for p in receiver.posts] == ["etl r1: 1 task failed", "etl r2: 1 task failed"]


def test_the_incident_key_stays_the_same_across_retries_and_a_resend(
    store, alerts_config, receiver, cli_env
):
    config = _grouped(alerts_config, receiver, group_wait=0)
    receiver.script = [500]
    raise_alert(store, config)
    dispatcher = Dispatcher(config, store)
    assert dispatcher.run_once(T0).retried == 1
    # the retry is due 1 s (alerts.retry_delay) after the first attempt ended, which is
    # T0 plus the real time that attempt took: seconds on a busy machine
    assert dispatcher.run_once(T0 + timedelta(seconds=30)).sent == 1
    (page,) = alert_rows(store, event=Event.INCIDENT.value)
    with store.session() as session:
        assert outbox.requeue(session, page.id, T0 + timedelta(seconds=31))
    assert dispatcher.run_once(T0 + timedelta(seconds=31)).sent == 1
    keys = {_key(post) for post in receiver.posts}
    (incident,) = _incidents(store)
    assert len(receiver.posts) == 3 and keys == {incident.key}


def test_group_by_task_makes_one_incident_per_task_across_runs(store, alerts_config, receiver):
    config = _grouped(alerts_config, receiver, group_by=["dag_id", "task_id"], group_wait=0)
    raise_alert(store, config, run_id="r1", task_id="load")
    raise_alert(store, config, run_id="r2", task_id="load")
    raise_alert(store, config, run_id="r2", task_id="save")
    Dispatcher(config, store).run_once(T0)
    assert sorted(p.title for p in receiver.posts) == [
        "etl load: 2 tasks failed",
        "etl save: 1 task failed",
    ]


def test_group_by_empty_pages_alert_by_alert(store, alerts_config, receiver):
    config = _grouped(alerts_config, receiver, group_by=[])
    raise_alert(store, config, task_id="a")
    raise_alert(store, config, task_id="b")
    assert Dispatcher(config, store).run_once(T0).sent == 2
    assert _incidents(store) == []


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"group_by": ["dag_id", "pool"]}, "alerts.routes.r.group_by: unknown field(s) 'pool'"),
        ({"group_by": "dag_id"}, None),
        ({"group_wait": -1}, "alerts.routes.r.group_wait = -1: must be a number of seconds"),
        ({"group_interval": "5m"}, "alerts.routes.r.group_interval = '5m'"),
        ({"send_resolved": "yes"}, "alerts.routes.r.send_resolved = 'yes': must be true or false"),
    ],
)
def test_bad_grouping_is_one_clear_error(route, message):
    table = {"urls": ["json://127.0.0.1/x"], **route}
    if message is None:
        assert parse_route("r", table).grouping.group_by == ("dag_id",)
        return
    with pytest.raises(ConfigError) as caught:
        parse_route("r", table)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_bad_default_group_by_names_the_key(environ):
    from engine.config import load_config

    with pytest.raises(ConfigError, match=r"alerts.group_by = 'dag_id,pool'.*dag_id, run_id"):
        load_config({**environ, "DAGWATCH__ALERTS__GROUP_BY": "dag_id,pool"})


# -- route filters and system events -------------------------------------------------------


def test_filtered_routes_get_system_events_only_when_they_ask(config):
    config = config.with_overrides(
        alerts__routes={
            "billing": {"urls": ["json://127.0.0.1/b"], "dags": ["billing_*"]},
            "asks": {
                "urls": ["json://127.0.0.1/a"],
                "tags": ["critical"],
                "events": ["task_failed", "scheduler_unhealthy", "alert_delivery_failed"],
            },
            "all": {"urls": ["json://127.0.0.1/c"]},
        }
    )
    routes = load_routes(config)
    for event in (Event.SCHEDULER_UNHEALTHY, Event.ALERT_DELIVERY_FAILED, Event.IMPORT_ERROR):
        got = {row.route for row in compose(routes, event, payload={}, extra="x")}
        expected = {"all", "asks"} if event is not Event.IMPORT_ERROR else {"all"}
        assert got == expected, event
    got = {
        row.route for row in compose(routes, Event.TASK_FAILED, payload={}, dag_id="billing_daily")
    }
    assert got == {"billing", "all"}


def test_delivery_failures_reach_a_filtered_route_only_about_its_dags(
    store, alerts_config, receiver, dead_url
):
    config = alerts_config(
        alerts__routes={
            "dead": {"urls": [dead_url]},
            "billing": {
                "urls": [receiver.url("billing")],
                "dags": ["billing_*"],
                "events": ["alert_delivery_failed"],
            },
            "leaky": {"urls": [receiver.url("leaky")], "dags": ["billing_*"]},
        },
        alerts__max_attempts=1,
    )
    raise_alert(store, config, dag_id="other")
    raise_alert(store, config, dag_id="billing_daily")
    dispatcher = Dispatcher(config, store)
    dispatcher.run_once(T0)
    # the delivery failure is raised when it happened: after the first pass, however long
    # that took on a busy machine
    dispatcher.run_once(T0 + timedelta(seconds=30))
    failed = alert_rows(store, event=Event.ALERT_DELIVERY_FAILED.value)
    assert [(row.route, row.payload["dag_id"]) for row in failed] == [("billing", "billing_daily")]
    # `leaky` gets its own DAG's failure, and no word of the delivery failures
    assert sorted(post.path for post in receiver.posts) == ["/billing", "/leaky"]
    (leak,) = [post for post in receiver.posts if post.path == "/leaky"]
    assert "billing_daily" in leak.title and "deliver" not in leak.message.lower()


def test_system_events_neither_use_nor_obey_a_rate_limit(store, alerts_config, receiver):
    config = alerts_config(
        alerts__routes={
            "team": {
                "urls": [receiver.url()],
                "events": ["task_failed", "scheduler_unhealthy"],
                "rate_limit": 1,
            }
        },
        alerts__group_window=0,
    )
    routes = load_routes(config)
    dispatcher = Dispatcher(config, store)
    with store.session() as session:
        rows = compose(routes, Event.SCHEDULER_UNHEALTHY, payload={}, extra="job-1")
        outbox.enqueue(session, rows, T0)
    assert dispatcher.run_once(T0).sent == 1
    raise_alert(store, config, task_id="a")
    assert dispatcher.run_once(T0 + timedelta(seconds=1)).sent == 1  # the limit is not used up
    with store.session() as session:
        rows = compose(routes, Event.SCHEDULER_UNHEALTHY, payload={}, extra="job-2")
        outbox.enqueue(session, rows, T0 + timedelta(seconds=2))
    raise_alert(store, config, task_id="b", now=T0 + timedelta(seconds=2))
    report = dispatcher.run_once(T0 + timedelta(seconds=2))
    assert (report.sent, report.suppressed) == (1, 1)  # the second failure is over the limit
    statuses = {(row.event, row.task_id): row.status for row in alert_rows(store)}
    assert statuses[("scheduler_unhealthy", None)] == outbox.SENT
    assert statuses[("task_failed", "b")] == outbox.SUPPRESSED


def test_a_restarted_dispatcher_keeps_the_incident_its_window_and_its_key(
    store, alerts_config, receiver
):
    config = _grouped(alerts_config, receiver, group_wait=5, group_interval=60)
    raise_alert(store, config, task_id="a", now=T0)
    assert Dispatcher(config, store).run_once(T0 + timedelta(seconds=1)).grouped == 1
    restarted = Dispatcher(config, store)  # a new process: nothing kept in memory
    raise_alert(store, config, task_id="b", now=T0 + timedelta(seconds=2))
    assert restarted.run_once(T0 + timedelta(seconds=3)).sent == 0  # still within group_wait
    assert restarted.run_once(T0 + timedelta(seconds=5)).sent == 1
    (page,) = receiver.posts
    assert page.title == "etl manual__1: 2 tasks failed"
    (incident,) = _incidents(store)
    assert _key(page) == incident.key


def test_alerts_incidents_lists_them_with_their_keys(store, alerts_config, receiver, cli_env):
    from tests.helpers import run_cli

    config = _grouped(alerts_config, receiver, group_wait=0)
    raise_alert(store, config, run_id="r1")
    raise_alert(store, config, run_id="r2", task_id="a")
    raise_alert(store, config, run_id="r2", task_id="b")
    Dispatcher(config, store).run_once(T0)
    env = {**cli_env, "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": store.url.render_as_string(False)}
    result = run_cli("alerts", "incidents", "--status", "open", "--output", "json", env=env)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [(row["run_id"], row["alerts"], row["pages"]) for row in listed] == [
        ("r2", 2, 1),
        ("r1", 1, 1),
    ]
    assert {row["key"] for row in listed} == {item.key for item in _incidents(store)}
    bad = run_cli("alerts", "incidents", "--status", "closed", env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_the_dispatchers_incident_queries_scan_no_big_table(store, alerts_config, receiver):
    """Grouping, paging and resolving read through indexes (checked on SQLite's plans)."""
    if store.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's EXPLAIN QUERY PLAN is what this reads")
    from tests.integration.test_scheduler_queries import BIG_TABLES, recording

    config = _grouped(alerts_config, receiver, group_wait=1, group_interval=1, send_resolved=True)
    for number in range(3):
        raise_alert(store, config, task_id=f"t{number}", run_id="r1")
    statements = recording(store)
    dispatcher = Dispatcher(config, store)
    for seconds in (0, 2, 4, 10):
        dispatcher.run_once(T0 + timedelta(seconds=seconds))
    queries = [
        (query, parameters)
        for query, parameters in statements
        if query.lstrip().upper().startswith(("SELECT", "UPDATE"))
    ]
    assert any("alert_incident" in query for query, _ in queries)
    assert any("FROM dag_run" in query for query, _ in queries)  # the resolution looked
    with store.engine.connect() as connection:
        for query, parameters in queries:
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}", parameters).all()
            scans = [
                row[-1]
                for row in plan
                if row[-1].split()[:2]
                in (["SCAN", table] for table in (*BIG_TABLES, "alert_incident"))
                and "USING" not in row[-1]
            ]
            assert not scans, f"{query}\n-> {scans}"


def test_opsgenie_gets_the_incident_key_as_its_alias_unless_the_url_sets_one():
    from alerts.delivery import _add_dedup_key
    from alerts.notifiers import load_apprise

    apprise = load_apprise()
    notifier = apprise.Apprise()
    notifier.add("opsgenie://apikey/")
    notifier.add("opsgenie://apikey/?alias=own-alias")
    plain, own = list(notifier)
    for service in (plain, own):
        _add_dedup_key(service, "dagwatch-incident-abc")
    assert (plain.alias, own.alias) == ("dagwatch-incident-abc", "own-alias")


def test_pagerduty_resolves_the_incident_it_triggered(store, alerts_config, receiver, monkeypatch):
    from alerts.notifiers import load_apprise

    load_apprise()
    from apprise.plugins import pagerduty

    monkeypatch.setitem(
        pagerduty.PAGERDUTY_API_LOOKUP, "us", f"http://127.0.0.1:{receiver.port}/v2"
    )
    config = alerts_config(
        alerts__group_by="dag_id,run_id",
        alerts__routes={
            "pd": {
                "urls": ["pagerduty://integration-key@api-key"],
                "group_wait": 0,
                "send_resolved": True,
            }
        },
    )
    raise_alert(store, config, now=T0)
    dispatcher = Dispatcher(config, store)
    assert dispatcher.run_once(T0).sent == 1
    (incident,) = _incidents(store)
    with store.session() as session:
        resolved = session.get(AlertIncident, incident.id)
        incidents.resolve(session, load_routes(config)["pd"], resolved, config, T0)
    assert dispatcher.run_once(T0 + timedelta(seconds=1)).sent == 1
    assert [(p.body["event_action"], p.body["dedup_key"]) for p in receiver.posts] == [
        ("trigger", incident.key),
        ("resolve", incident.key),
    ]
