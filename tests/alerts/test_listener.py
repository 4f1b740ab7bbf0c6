"""Alerts written by state transitions, in the transition's transaction, through the real tick."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote_plus

import pytest
from sqlalchemy import select

from alerts import listener, routes
from alerts.events import Event
from engine import hooks
from engine.clock import FakeClock
from engine.exceptions import ConfigError
from engine.hooks import TickContext
from engine.parsing.parser import process_folders
from engine.states import TaskState
from engine.store import transitions
from engine.store.models import Alert, SlaMiss, TaskInstance
from tests.integration import test_scheduler_tick as tick
from tests.integration.test_scheduler_tick import T0, complete, trigger

sched_config = tick.sched_config
add_dag = tick.add_dag
make_scheduler = tick.make_scheduler

URL = "json://127.0.0.1:9/never-called"


def install_routes(config, **tables):
    """Install the alerts plugin with these routes (what `runtime.configure` does)."""
    configured = config.with_overrides(alerts__routes=tables)
    hooks.install(configured)
    return configured


def alert_rows(store, **where) -> list[Alert]:
    with store.session() as session:
        statement = select(Alert).filter_by(**where).order_by(Alert.id)
        rows = list(session.scalars(statement))
        session.expunge_all()
    return rows


FLAKY = """
with DAG("flaky", schedule=None, tags=["billing"], default_args={"owner": "data-eng"}):
    EmptyOperator(task_id="load", retries=2, retry_delay=timedelta(seconds=0))
"""


def fail_with_retries(store, make_scheduler, attempts: int = 3, run_id: str | None = None) -> str:
    """Run `flaky` (triggered here unless `run_id` is given), failing every attempt."""
    clock = FakeClock(T0)
    scheduler, stub = make_scheduler(clock=clock)
    run_id = run_id or trigger(store, "flaky")
    for attempt in range(1, attempts + 1):
        clock.set(T0 + timedelta(seconds=attempt))
        scheduler.tick(clock.now())
        (ti_id,) = list(stub.held)
        outcome = TaskState.FAILED if attempt == attempts else TaskState.UP_FOR_RETRY
        complete(store, stub, ti_id, outcome, clock.now(), reason=None)
        stub.held.clear()
    clock.advance(timedelta(seconds=1))
    scheduler.tick(clock.now())
    return run_id


def test_a_task_failing_after_retries_writes_one_failure_alert_and_no_retry_page(
    store, add_dag, make_scheduler, sched_config
):
    add_dag("flaky", FLAKY)
    install_routes(sched_config, oncall={"urls": [URL]})

    run_id = fail_with_retries(store, make_scheduler)

    rows = alert_rows(store)
    assert [(r.event, r.route, r.status) for r in rows] == [
        ("task_failed", "oncall", "pending"),
        ("dag_run_failed", "oncall", "pending"),
    ]
    failed = rows[0]
    assert (failed.dag_id, failed.run_id, failed.task_id) == ("flaky", run_id, "load")
    assert failed.payload["attempt"] == 3 and failed.payload["max_attempts"] == 3
    assert failed.payload["state"] == "failed"
    assert failed.payload["link"] == (
        f"http://127.0.0.1:8501/runs?dag_id=flaky&run_id={quote_plus(run_id)}"
    )
    assert failed.severity == "error" and failed.group_key == "oncall|task_failed|flaky|load"


def test_a_route_asking_for_retries_gets_one_row_per_retry(
    store, add_dag, make_scheduler, sched_config
):
    add_dag("flaky", FLAKY)
    install_routes(sched_config, chatty={"urls": [URL], "events": ["task_retry"]})

    fail_with_retries(store, make_scheduler)

    rows = alert_rows(store)
    assert [(r.event, r.payload["attempt"]) for r in rows] == [("task_retry", 1), ("task_retry", 2)]
    assert {r.severity for r in rows} == {"warning"}


@pytest.mark.parametrize(
    ("table", "matches"),
    [
        ({"dags": ["fla*"]}, True),
        ({"dags": ["other_*"]}, False),
        ({"tags": ["billing"]}, True),
        ({"tags": ["marketing"]}, False),
        ({"owners": ["data-eng"]}, True),
        ({"owners": ["someone-else"]}, False),
    ],
)
def test_routes_filter_by_dag_glob_tag_and_owner(
    store, add_dag, make_scheduler, sched_config, table, matches
):
    add_dag("flaky", FLAKY)
    install_routes(sched_config, team={"urls": [URL], "events": ["dag_run_failed"], **table})

    fail_with_retries(store, make_scheduler)

    assert len(alert_rows(store, event="dag_run_failed")) == (1 if matches else 0)


def test_no_route_no_rows_and_one_occurrence_is_one_row(
    store, add_dag, make_scheduler, sched_config
):
    add_dag("flaky", FLAKY)
    hooks.install(sched_config)  # no routes: the listener writes nothing
    fail_with_retries(store, make_scheduler)
    assert alert_rows(store) == []

    installed = install_routes(sched_config, oncall={"urls": [URL]})
    alerts_of = listener.TransitionAlerts(routes.load_routes(installed), installed)
    change = transitions.TransitionEvent(
        entity="task_instance", dag_id="flaky", run_id="r1", task_id="load", map_index=-1,
        try_number=3, from_state="running", to_state="failed", at=T0, reason="boom",
    )  # fmt: skip
    with store.session() as session:
        alerts_of(session, [change])
        alerts_of(session, [change])  # the same occurrence again: same fingerprint
    assert [r.payload["exception"] for r in alert_rows(store)] == ["boom"]


def test_alert_rows_roll_back_with_the_transition_that_caused_them(
    store, add_dag, make_scheduler, sched_config
):
    add_dag("flaky", FLAKY)
    install_routes(sched_config, oncall={"urls": [URL]})
    scheduler, stub = make_scheduler()
    trigger(store, "flaky")
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)

    with pytest.raises(RuntimeError), store.session() as session:
        transitions.transition_task_instance(
            session, ti_id, expected=TaskState.QUEUED, to=TaskState.RUNNING, at=T0, try_number=3
        )
        transitions.transition_task_instance(
            session, ti_id, expected=TaskState.RUNNING, to=TaskState.FAILED, at=T0
        )
        raise RuntimeError("the worker dies before committing")

    assert alert_rows(store) == []
    with store.session() as session:
        assert session.get(TaskInstance, ti_id).state == "queued"


def test_a_zombie_is_its_own_event(store, add_dag, make_scheduler, sched_config):
    add_dag("flaky", FLAKY)
    install_routes(sched_config, oncall={"urls": [URL], "events": ["zombie_killed"]})
    clock = FakeClock(T0)
    scheduler, stub = make_scheduler(clock=clock, scheduler__heartbeat_timeout=30)
    trigger(store, "flaky")
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)
    stub.held.clear()  # the worker vanished
    with store.session() as session:
        transitions.transition_task_instance(
            session, ti_id, expected=TaskState.QUEUED, to=TaskState.RUNNING, at=T0,
            try_number=1, last_heartbeat=T0,
        )  # fmt: skip
    clock.set(T0 + timedelta(seconds=31))  # housekeeping is due (every 5 s)
    scheduler.tick(clock.now())

    (row,) = alert_rows(store)
    assert (row.event, row.task_id, row.severity) == ("zombie_killed", "load", "warning")
    assert row.payload["state"] == "up_for_retry" and "zombie" in row.payload["exception"]


def test_a_failure_alert_says_the_deadline_was_missed_too(
    store, add_dag, make_scheduler, sched_config
):
    add_dag("flaky", FLAKY)
    install_routes(sched_config, oncall={"urls": [URL], "events": ["dag_run_failed"]})
    run_id = trigger(store, "flaky")
    with store.session() as session:
        session.add(
            SlaMiss(kind="dag_deadline", dag_id="flaky", run_id=run_id, task_id="",
                    deadline=T0, detected_at=T0, notified=False, state="running")
        )  # fmt: skip
    fail_with_retries(store, make_scheduler, run_id=run_id)

    (row,) = alert_rows(store)
    assert row.payload["deadline_missed"] is True
    assert row.payload["misses"] == [
        {"kind": "dag_deadline", "task_id": None, "deadline": T0.isoformat()}
    ]


def test_resolved_follows_a_failure_once(store, add_dag, make_scheduler, sched_config):
    add_dag("flaky", FLAKY)
    # task_resolved is what a route paging alert by alert gets; grouped routes resolve
    # their incidents (test_incidents.py)
    install_routes(
        sched_config.with_overrides(alerts__send_resolved=True),
        oncall={"urls": [URL], "group_by": []},
    )
    fail_with_retries(store, make_scheduler)
    clock = FakeClock(T0 + timedelta(minutes=5))
    scheduler, stub = make_scheduler(clock=clock)
    for minute in (5, 6):  # two later runs succeed: only the first resolves the failure
        clock.set(T0 + timedelta(minutes=minute))
        trigger(store, "flaky", clock.now())
        scheduler.tick(clock.now())
        (ti_id,) = list(stub.held)
        complete(store, stub, ti_id, TaskState.SUCCESS, clock.now())
        stub.held.clear()
        scheduler.tick(clock.now())

    resolved = alert_rows(store, event="task_resolved")
    (failed,) = alert_rows(store, event="task_failed")
    assert len(resolved) == 1
    assert resolved[0].payload["resolves"] == failed.id
    assert resolved[0].severity == "info"


def test_import_errors_are_alerted_once_per_error(store, sched_config):
    folder = sched_config["core.dags_folder"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.py").write_text("from engine import DAG\nimport nothing_here_at_all\n")
    process_folders(store, sched_config)
    installed = install_routes(sched_config, oncall={"urls": [URL]})
    configured = routes.load_routes(installed)
    context = TickContext(T0, store, installed, lambda dag_id: None)

    listener.ImportErrorAlerts(configured, installed).check(context)
    listener.ImportErrorAlerts(configured, installed).check(context)  # a restarted scheduler

    (row,) = alert_rows(store)
    assert row.event == "import_error" and row.payload["filename"].endswith("broken.py")
    assert "nothing_here_at_all" in row.payload["exception"]

    (folder / "broken.py").write_text(
        "from engine import DAG\nraise ValueError('another mistake')\n"
    )
    process_folders(store, sched_config)
    listener.ImportErrorAlerts(configured, installed).check(context)
    assert [r.payload["exception"] for r in alert_rows(store)][-1] == (
        "ValueError: another mistake"
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"urls": [URL], "colour": "red"}, "unknown key(s) colour"),
        ({"events": ["task_failed"]}, "needs urls, conn_id or tag"),
        ({"urls": [URL], "events": ["task_exploded"]}, "unknown alert event 'task_exploded'"),
        ({"urls": [URL], "severity": "urgent"}, "allowed: info, warning, error, critical"),
        ({"urls": [URL], "rate_limit": 0}, "rate_limit must be a whole number"),
        ({"urls": "not-a-list-of-urls", "dags": 3}, "dags must be a list of strings"),
    ],
)
def test_a_bad_route_is_one_clear_error(config, table, message):
    with pytest.raises(ConfigError, match=r"alerts\.routes\.bad") as caught:
        routes.load_routes(config.with_overrides(alerts__routes={"bad": table}))
    assert message in str(caught.value)


def test_routes_from_the_environment_and_the_fallback_route(config):
    from engine.config import load_config

    environ = {
        "DAGWATCH_HOME": str(config.home),
        "DAGWATCH__ALERTS__ROUTES": '{"oncall": {"conn_id": "pagerduty", "severity": "critical"}}',
        "DAGWATCH__ALERTS__FALLBACK_URLS": "env:FALLBACK_URL",
    }
    loaded = routes.load_routes(load_config(environ))

    assert sorted(loaded) == ["fallback", "oncall"]
    assert loaded["oncall"].target.conn_id == "pagerduty"
    assert loaded["oncall"].severity_of(Event.TASK_FAILED) == "critical"
    assert loaded["fallback"].events == {Event.ALERT_DELIVERY_FAILED}
    assert loaded["fallback"].target.urls == ("env:FALLBACK_URL",)


def test_config_list_never_shows_a_route_url(config):
    from engine.config import load_config

    config.file.write_text(
        '[alerts.routes.oncall]\nurls = ["slack://TokenA/TokenB/TokenC"]\n'
        '[alerts]\nfallback_urls = "json://user:hunter2@example.com/hook"\n'
    )
    loaded = load_config({"DAGWATCH_HOME": str(config.home)})

    assert loaded.settings["alerts.routes"].display_value() == "{oncall: ***}"
    assert loaded.settings["alerts.fallback_urls"].display_value() == "***"
    assert loaded["alerts.routes"]["oncall"]["urls"] == ["slack://TokenA/TokenB/TokenC"]


def test_the_listener_wants_only_the_transitions_its_routes_page_on(sched_config):
    """What `wants` says decides whether the engine calls the listener at all."""

    def wants(config, *transitions_):
        alerts_of = listener.TransitionAlerts(routes.load_routes(config), config)
        return [alerts_of.wants(entity, to, reason) for entity, to, reason in transitions_]

    ti, run = "task_instance", "dag_run"
    asked = [
        (ti, "running", None),
        (ti, "success", None),
        (ti, "failed", "boom"),
        (ti, "up_for_retry", None),
        (ti, "up_for_retry", "zombie: no heartbeat"),
        (run, "failed", None),
    ]
    assert wants(sched_config, *asked) == [False] * 6  # no route
    paging = install_routes(sched_config, oncall={"urls": [URL]})  # the default events
    assert wants(paging, *asked) == [False, False, True, False, True, True]
    zombies = install_routes(sched_config, oncall={"urls": [URL], "events": ["zombie_killed"]})
    assert wants(zombies, *asked) == [False, False, False, False, True, False]
    resolving = install_routes(
        sched_config.with_overrides(alerts__send_resolved=True),
        oncall={"urls": [URL], "group_by": []},
    )
    assert wants(resolving, *asked)[:3] == [False, True, True]
