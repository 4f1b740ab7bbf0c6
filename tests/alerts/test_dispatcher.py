"""The dispatcher against real receivers: retries and backoff, failure and the fallback route,
group windows, rate limits, concurrent dispatchers, scheduler health, and a hanging channel
that must not slow the scheduler."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

import pytest

from alerts.dispatcher import Dispatcher, backoff
from engine import hooks
from engine.clock import FakeClock
from engine.store.models import Job
from tests.alerts.conftest import T0, alert_rows, delivery_rows, raise_alert
from tests.integration import test_scheduler_tick as tick

sched_config = tick.sched_config
add_dag = tick.add_dag
make_scheduler = tick.make_scheduler

TOKEN = "s3cr3t-hook-token-0042"


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def test_backoff_doubles_from_retry_delay_and_is_capped(config):
    config = config.with_overrides(alerts__retry_delay=5, alerts__max_retry_delay=30)
    assert [backoff(config, n).total_seconds() for n in range(1, 6)] == [5, 10, 20, 30, 30]


def test_a_channel_failing_three_times_is_delivered_on_the_fourth_attempt(
    store, alerts_config, receiver, emitted
):
    config = alerts_config(
        alerts__routes={"hook": {"urls": [receiver.url()]}},
        alerts__max_attempts=5,
        alerts__retry_delay=5,
        alerts__max_retry_delay=8,
    )
    receiver.script = [500, 500, 500]
    (alert_id,) = raise_alert(store, config)
    dispatcher = Dispatcher(config, store, clock=FakeClock(T0))

    now = T0
    for attempt, wait in enumerate([5, 8, 8], start=1):  # 5, 10 capped to 8, 20 capped to 8
        report = dispatcher.run_once(now)
        assert (report.retried, report.sent) == (1, 0)
        (row,) = alert_rows(store)
        last = delivery_rows(store, alert_id)[-1]
        assert (row.status, row.attempts, last.attempt) == ("pending", attempt, attempt)
        assert row.next_attempt_at - last.at == seconds(wait)
        assert "500" in last.error
        assert dispatcher.run_once(row.next_attempt_at - seconds(0.5)).retried == 0  # not yet
        now = row.next_attempt_at

    report = dispatcher.run_once(now)

    assert report.sent == 1
    assert [post.status for post in receiver.posts] == [500, 500, 500, 200]
    deliveries = delivery_rows(store, alert_id)
    assert [(d.attempt, d.status) for d in deliveries] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
        (4, "sent"),
    ]
    (row,) = alert_rows(store)
    assert (row.status, row.attempts, row.last_error) == ("sent", 4, None)
    assert row.sent_at == deliveries[-1].at
    labels = {"channel": "json", "route": "hook", "event": "task_failed"}
    assert emitted.values("alert.delivered") == [(labels, 1.0)]
    ((latency_labels, latency),) = emitted.values("alert.delivery_latency")
    assert latency_labels == {"channel": "json"}
    assert latency == pytest.approx((row.sent_at - row.created_at).total_seconds())


def test_the_message_names_dag_task_run_state_and_link(store, alerts_config, receiver):
    config = alerts_config(alerts__routes={"hook": {"urls": [receiver.url()]}})
    raise_alert(store, config, dag_id="billing", run_id="scheduled__2026-01-10", task_id="load")

    Dispatcher(config, store).run_once(T0)

    (post,) = receiver.posts
    assert post.title == "[dagwatch] billing.load failed"
    assert post.type == "failure"
    for line in (
        "DAG: billing",
        "Task: load",
        "Run: scheduled__2026-01-10",
        "State: failed",
        "Error: ValueError: bad rows",
        "Link: http://127.0.0.1:8501/runs?dag_id=billing&run_id=scheduled__2026-01-10",
    ):
        assert line in post.message.splitlines()


def test_route_templates_render_in_a_sandbox_and_a_broken_one_falls_back(
    store, alerts_config, receiver
):
    config = alerts_config(
        alerts__routes={
            "custom": {
                "urls": [receiver.url("custom")],
                "title": "{{ dag_id | upper }} / {{ task_id }} is {{ state }}",
                "body": "see {{ link }} ({{ severity }})",
            },
            "broken": {
                "urls": [receiver.url("broken")],
                "title": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
            },
        }
    )
    raise_alert(store, config)

    Dispatcher(config, store).run_once(T0)

    posts = {post.path: post for post in receiver.posts}
    assert posts["/custom"].title == "ETL / load is failed"
    link = f"{config['alerts.console_url']}/runs?dag_id=etl&run_id=manual__1"
    assert posts["/custom"].message == f"see {link} (error)"
    assert posts["/broken"].title == "[dagwatch] etl.load failed"  # the default title
    assert "route broken: its template failed" in posts["/broken"].message


def test_a_dead_channel_escalates_once_after_max_attempts_and_fails_at_max_age(
    store, alerts_config, receiver, dead_url, emitted
):
    config = alerts_config(
        alerts__routes={"oncall": {"urls": [dead_url]}},
        alerts__fallback_urls=receiver.url("fallback"),
        alerts__max_attempts=3,
        alerts__retry_delay=0,
        alerts__max_age="1m",
    )
    (alert_id,) = raise_alert(store, config)
    dispatcher = Dispatcher(config, store)

    # Passes 10 s apart (a first delivery may take a second: it imports Apprise).
    reports = [dispatcher.run_once(T0 + seconds(10 * i)) for i in range(6)]

    # The third failure raises alert_delivery_failed, once; delivery goes on.
    assert [(r.retried, r.failed, r.raised) for r in reports] == [(1, 0, 0)] * 2 + [(1, 0, 1)] + [
        (1, 0, 0)
    ] * 3
    assert [r.sent for r in reports] == [0, 0, 0, 1, 0, 0]  # the fallback route was told
    retrying, told = alert_rows(store)
    assert (retrying.id, retrying.status, retrying.attempts) == (alert_id, "pending", 6)
    assert "Connection error" in retrying.last_error
    assert (told.event, told.route, told.status) == ("alert_delivery_failed", "fallback", "sent")
    (post,) = receiver.posts
    assert post.path == "/fallback"
    assert post.title == f"[dagwatch] alert #{alert_id} (task_failed) could not be delivered"
    assert "Failed route: oncall" in post.message and "Task: load" in post.message
    assert "keeps retrying until 2026-01-10 12:01:00 UTC (alerts.max_age)" in post.message
    counted = [({"channel": "json", "route": "oncall", "event": "task_failed"}, 1.0)]
    assert emitted.values("alert.failed") == counted  # once, at the escalation

    last = dispatcher.run_once(T0 + seconds(60))  # alerts.max_age after it was queued

    assert (last.retried, last.failed, last.raised) == (0, 1, 0)
    (failed,) = alert_rows(store, id=alert_id)
    assert (failed.status, failed.attempts) == ("failed", 7)
    assert [d.status for d in delivery_rows(store, alert_id)] == ["failed"] * 7
    assert len(receiver.posts) == 1
    assert emitted.values("alert.failed") == counted  # not again


def test_retries_back_off_up_to_the_cap_and_the_last_one_falls_on_max_age(
    store, alerts_config, dead_url
):
    config = alerts_config(
        alerts__routes={"oncall": {"urls": [dead_url]}},
        alerts__retry_delay=10,
        alerts__max_retry_delay=40,
        alerts__max_age=100,
    )
    (alert_id,) = raise_alert(store, config)
    dispatcher = Dispatcher(config, store)

    now = T0
    while alert_rows(store)[0].status == "pending":
        dispatcher.run_once(now)
        now = alert_rows(store)[0].next_attempt_at or now

    starts = [(d.at - T0).total_seconds() for d in delivery_rows(store, alert_id)]
    # 10, 20, 40, 40 seconds apart, then the horizon (100 s), where it gives up.
    assert [round(t) for t in starts] == [0, 10, 30, 70, 100]
    assert alert_rows(store)[0].status == "failed"


def test_an_undeliverable_delivery_failure_alert_raises_no_other(store, alerts_config, dead_url):
    config = alerts_config(
        alerts__routes={"oncall": {"urls": [dead_url]}},
        alerts__fallback_urls=dead_url,
        alerts__max_attempts=2,
        alerts__retry_delay=0,
        alerts__max_age=5,
    )
    raise_alert(store, config)
    dispatcher = Dispatcher(config, store)

    for i in range(20):
        dispatcher.run_once(T0 + seconds(i))

    rows = alert_rows(store)
    assert [(r.event, r.route, r.status) for r in rows] == [
        ("task_failed", "oncall", "failed"),
        ("alert_delivery_failed", "fallback", "failed"),
    ]


def test_a_row_whose_route_is_gone_fails_at_once(store, alerts_config, receiver):
    config = alerts_config(alerts__routes={"old": {"urls": [receiver.url()]}})
    raise_alert(store, config)
    config = alerts_config(alerts__routes={})

    report = Dispatcher(config, store).run_once(T0)

    assert report.failed == 1
    (row,) = alert_rows(store)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error == "route 'old' is not configured"
    assert receiver.posts == []


def test_alerts_of_one_group_within_the_window_go_out_as_one_message_with_a_count(
    store, alerts_config, receiver, emitted
):
    config = alerts_config(
        alerts__routes={"hook": {"urls": [receiver.url()]}}, alerts__group_window=600
    )
    dispatcher = Dispatcher(config, store)
    raise_alert(store, config, run_id="run_1")
    assert dispatcher.run_once(T0).sent == 1
    later = T0 + seconds(60)
    ids = [raise_alert(store, config, run_id=f"run_{n}", now=later)[0] for n in (2, 3, 4)]

    held = dispatcher.run_once(later)
    still = dispatcher.run_once(T0 + seconds(599))
    released = dispatcher.run_once(T0 + seconds(601))

    assert (held.deferred, held.sent) == (3, 0)
    assert (still.deferred, still.sent) == (0, 0)
    assert (released.sent, released.grouped) == (1, 2)
    first, grouped = receiver.posts
    assert first.title == "[dagwatch] etl.load failed"
    assert grouped.title == "[dagwatch] etl.load failed (+2 more)"
    assert "Run: run_2" in grouped.message
    assert "… and 2 more task_failed alert(s) of this task" in grouped.message
    rows = {row.id: row for row in alert_rows(store)}
    assert (rows[ids[0]].status, rows[ids[0]].count) == ("sent", 3)
    for other in ids[1:]:
        assert rows[other].status == "suppressed"
        assert rows[other].last_error == f"grouped into alert #{ids[0]}"
    labels = {"channel": "none", "route": "hook", "event": "task_failed"}
    assert emitted.values("alert.suppressed") == [(labels, 1.0), (labels, 1.0)]


def test_a_route_over_its_rate_limit_suppresses_the_rest_for_the_hour(
    store, alerts_config, receiver, emitted
):
    config = alerts_config(
        alerts__routes={"hook": {"urls": [receiver.url()], "rate_limit": 2}},
        alerts__group_window=0,
    )
    for task in ("a", "b", "c"):
        raise_alert(store, config, task_id=task)
    dispatcher = Dispatcher(config, store)

    report = dispatcher.run_once(T0)

    assert (report.sent, report.suppressed) == (2, 1)
    assert [post.title for post in receiver.posts] == [
        "[dagwatch] etl.a failed",
        "[dagwatch] etl.b failed",
    ]
    rows = alert_rows(store)
    assert [(r.task_id, r.status, r.last_error) for r in rows] == [
        ("a", "sent", None),
        ("b", "sent", None),
        ("c", "suppressed", "rate limited"),
    ]
    assert emitted.values("alert.suppressed") == [
        ({"channel": "none", "route": "hook", "event": "task_failed"}, 1.0)
    ]
    hour_later = T0 + timedelta(hours=1, seconds=1)
    raise_alert(store, config, task_id="d", now=hour_later)
    assert dispatcher.run_once(hour_later).sent == 1


def test_two_dispatchers_never_deliver_one_alert_twice(store, alerts_config, receiver):
    config = alerts_config(
        alerts__routes={"hook": {"urls": [receiver.url()]}}, alerts__group_window=0
    )
    for n in range(24):
        raise_alert(store, config, task_id=f"task_{n:02d}")
    receiver.delay = 0.02  # keep deliveries in flight while the other dispatcher claims
    dispatchers = [Dispatcher(config, store), Dispatcher(config, store)]
    start = threading.Barrier(2)
    reports = []

    def work(dispatcher: Dispatcher) -> None:
        start.wait()
        reports.append(dispatcher.run_once(T0))

    threads = [threading.Thread(target=work, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    titles = sorted(post.title for post in receiver.posts)
    assert titles == sorted(f"[dagwatch] etl.task_{n:02d} failed" for n in range(24))
    assert sum(report.sent for report in reports) == 24
    assert all(report.sent for report in reports)  # both took part
    for row in alert_rows(store):
        assert row.status == "sent"
        assert len(delivery_rows(store, row.id)) == 1


def add_scheduler_job(store, heartbeat: datetime, state: str = "running") -> int:
    with store.session() as session:
        job = Job(
            job_type="scheduler",
            state=state,
            hostname="sched-1.example",
            pid=4242,
            start_date=heartbeat,
            latest_heartbeat=heartbeat,
        )
        session.add(job)
        session.flush()
        return job.id


def test_a_scheduler_whose_heartbeat_stopped_raises_scheduler_unhealthy_once(
    store, alerts_config, receiver
):
    config = alerts_config(
        alerts__routes={"hook": {"urls": [receiver.url()]}}, scheduler__heartbeat_timeout=60
    )
    silent = add_scheduler_job(store, T0 - seconds(61))
    add_scheduler_job(store, T0 + seconds(30))  # alive at every check
    add_scheduler_job(store, T0 - seconds(600), state="success")  # ended cleanly
    dispatcher = Dispatcher(config, store)

    assert dispatcher.run_once(T0).raised == 0  # a new dispatcher gives schedulers a timeout
    report = dispatcher.run_once(T0 + seconds(60))
    again = dispatcher.run_once(T0 + seconds(70))

    assert (report.raised, report.sent) == (1, 1)
    assert again.raised == 0
    (row,) = alert_rows(store)
    assert (row.event, row.severity, row.status) == ("scheduler_unhealthy", "critical", "sent")
    (post,) = receiver.posts
    assert (
        post.title == f"[dagwatch] scheduler on sched-1.example (job {silent}) stopped heartbeating"
    )
    assert "no heartbeat for 121 s (scheduler.heartbeat_timeout = 60 s)" in post.message


def test_a_scheduler_another_one_marked_failed_still_raises_scheduler_unhealthy(
    store, alerts_config, receiver
):
    """With several schedulers, a dead one is marked failed (30 s) before its silence
    reaches heartbeat_timeout: it is reported all the same; one that failed long ago not."""
    config = alerts_config(
        alerts__routes={"hook": {"urls": [receiver.url()]}}, scheduler__heartbeat_timeout=60
    )
    lost = add_scheduler_job(store, T0 - seconds(61), state="failed")
    old = add_scheduler_job(store, T0 - seconds(7200), state="failed")
    with store.session() as session:
        session.get(Job, lost).end_date = T0 - seconds(31)
        session.get(Job, old).end_date = T0 - seconds(7000)
    dispatcher = Dispatcher(config, store)

    dispatcher.run_once(T0)
    report = dispatcher.run_once(T0 + seconds(60))

    assert report.raised == 1
    (post,) = receiver.posts
    assert f"(job {lost}) stopped heartbeating" in post.title


def test_secrets_of_route_urls_stay_out_of_logs_and_rows(store, alerts_config, receiver, caplog):
    config = alerts_config(
        alerts__routes={"hook": {"urls": [receiver.url(f"hooks/{TOKEN}")]}},
        alerts__retry_delay=0,
    )
    receiver.script = [500]
    raise_alert(store, config)
    dispatcher = Dispatcher(config, store)

    with caplog.at_level(logging.DEBUG):
        dispatcher.run_once(T0)
        dispatcher.run_once(T0 + seconds(30))  # after the failure, however long it took

    assert [post.path for post in receiver.posts] == [f"/hooks/{TOKEN}"] * 2
    assert "JSON" in caplog.text  # apprise did log, at DEBUG, about the request
    assert TOKEN not in caplog.text
    for row in alert_rows(store):
        assert TOKEN not in repr(row.payload) and TOKEN not in (row.last_error or "")
        for delivery in delivery_rows(store, row.id):
            assert TOKEN not in (delivery.error or "")


STEADY = """
with DAG("steady", schedule="@hourly", start_date=pendulum.datetime(2026, 1, 1), catchup=True):
    chain(*[EmptyOperator(task_id=f"t{i}") for i in range(5)])
"""


def test_a_hanging_channel_never_slows_the_scheduler_loop(
    store, alerts_config, receiver, add_dag, make_scheduler
):
    overrides = {
        "alerts__routes": {"hook": {"urls": [receiver.url("slow")]}},
        "alerts__delivery_timeout": 10.0,  # in flight all through the ticks below
        "alerts__group_by": "",  # the alert itself is in flight (no incident page)
    }
    config = alerts_config(**overrides)
    assert any(hooks.current().services)  # the alerts plugin's dispatcher, started below
    add_dag("steady", STEADY)
    receiver.hang = True
    clock = FakeClock(T0)  # the scheduler's, so its dispatcher's too
    raise_alert(store, config, now=clock.now())
    scheduler, _ = make_scheduler(clock=clock, **overrides)  # starts the dispatcher thread
    # the first tick creates the catch-up runs: work of its own, measured by the benchmarks
    scheduler.tick(clock.now())
    receiver.wait_for(1)  # the delivery is in flight and will not be answered

    durations = []
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        clock.advance(0.1)  # about what a tick takes: periodic work comes at its pace
        started = time.monotonic()
        scheduler.tick(clock.now())
        durations.append(time.monotonic() - started)
    assert alert_rows(store)[0].attempts == 0  # still hanging all along
    stopping = time.monotonic()
    scheduler.shutdown(0.5)
    stopped_in = time.monotonic() - stopping

    assert len(durations) >= 10
    # a tick that waited on the channel would last the rest of the hang, 8 s or more; a
    # busy machine makes a tick of 30 ms take a second now and then
    assert max(durations) < 3.0, durations
    assert stopped_in < 2.0
    deadline = time.monotonic() + 10  # the delivery times out on its own, then is recorded
    while not (row := alert_rows(store)[0]).attempts and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (row.status, row.attempts) == ("pending", 1)
    assert "timeout: no answer within" in row.last_error
    assert "outcome unknown" in row.last_error
    assert [d.status for d in delivery_rows(store, row.id)] == ["timeout"]
