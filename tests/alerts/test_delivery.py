"""Delivery against real loopback channels that refuse, reset, fail, hang, answer late and
recover: one bad channel delays no other page, a page outlives max_attempts until
alerts.max_age, a timeout is an unknown outcome (never a "connection error"), and every
attempt of an alert carries the same dedup key."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from alerts import AppriseNotifier
from alerts.delivery import DEDUP_HEADER, LATE_ANSWER_GRACE, dedup_key
from alerts.dispatcher import Dispatcher
from tests.alerts.conftest import (
    T0,
    HttpReceiver,
    alert_rows,
    delivery_rows,
    free_port,
    raise_alert,
    start_receiver,
    stop_receiver,
)
from tests.helpers import start_cli

TASKS = ("extract", "load", "report")


@pytest.fixture
def receivers() -> Iterator[Callable[..., HttpReceiver]]:
    """`make(port=0)`: another HTTP receiver, stopped at the end of the test."""
    started: list[HttpReceiver] = []

    def make(port: int = 0) -> HttpReceiver:
        started.append(start_receiver(port))
        return started[-1]

    yield make
    for receiver in started:
        stop_receiver(receiver)


def wait_until(condition: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still not true after {timeout} s"
        time.sleep(0.05)


def keys(receiver: HttpReceiver) -> list[str | None]:
    return [post.headers.get(DEDUP_HEADER) for post in receiver.posts]


# -- one bad channel delays no other page ----------------------------------------------------


@pytest.mark.parametrize("trouble", ["hang", "slow"])
def test_a_hanging_or_slow_channel_does_not_delay_the_other_channels_pages(
    store, environ, alerts_config, receivers, trouble
):
    stuck, healthy = receivers(), receivers()
    if trouble == "hang":
        stuck.hang = True  # never answers
    else:
        stuck.delay = 15.0  # answers 200, long after alerts.delivery_timeout
    routes = {
        "stuck": {"urls": [stuck.url("stuck")]},  # first: its rows are the oldest ids
        "oncall": {"urls": [healthy.url("oncall")]},
    }
    env = {
        **environ,
        "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": store.engine.url.render_as_string(False),
        "DAGWATCH__ALERTS__ROUTES": json.dumps(routes),
        "DAGWATCH__ALERTS__DELIVERY_TIMEOUT": "10",
        "DAGWATCH__ALERTS__GROUP_WINDOW": "0",
        "DAGWATCH__ALERTS__GROUP_BY": "",  # a page per alert, as alerts_config writes them
    }
    config = alerts_config(alerts__routes=routes)
    now = datetime.now(UTC)
    for task in TASKS:
        raise_alert(store, config, task_id=task, now=now)
    process = start_cli(
        "alerts",
        "dispatch",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        stuck.wait_for(1, timeout=60)  # the dispatcher runs: the stuck channel has one page
        stuck_at = time.monotonic()
        healthy.wait_for(len(TASKS), timeout=30)
        waited = time.monotonic() - stuck_at
        assert len(stuck.posts) == 1  # one delivery at a time per channel: still that one
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()

    assert waited < 5.0, f"the healthy channel's pages took {waited:.1f} s"
    assert sorted(post.title for post in healthy.posts) == sorted(
        f"[dagwatch] etl.{task} failed" for task in TASKS
    )
    sent = [row for row in alert_rows(store) if row.route == "oncall"]
    assert [row.status for row in sent] == ["sent"] * len(TASKS)


def test_each_notifier_is_its_own_channel(store, alerts_config, receivers):
    config = alerts_config(alerts__delivery_timeout=6.0)
    stuck, healthy = receivers(), receivers()
    stuck.hang = True
    run = SimpleNamespace(dag_id="etl", run_id="scheduled__1", state="failed")
    context = {"dag": SimpleNamespace(dag_id="etl"), "dag_run": run, "run_id": run.run_id}
    AppriseNotifier(urls=stuck.url("stuck"))(context)  # the older row
    AppriseNotifier(urls=healthy.url("ok"))(context)
    dispatcher = Dispatcher(config, store)
    reports = []
    passing = threading.Thread(target=lambda: reports.append(dispatcher.run_once()))
    started = time.monotonic()
    passing.start()

    healthy.wait_for(1, timeout=30)
    waited = time.monotonic() - started
    passing.join(30)

    assert waited < 6.0  # before the stuck notifier's delivery timed out
    (report,) = reports
    assert (report.sent, report.timed_out) == (1, 1)
    assert len({row.channel for row in alert_rows(store)}) == 2


# -- a timeout is an unknown outcome ---------------------------------------------------------


def test_a_late_200_is_recorded_as_a_timeout_then_settles_the_alert_as_sent(
    store, alerts_config, receiver
):
    config = alerts_config(
        alerts__routes={"hook": {"urls": [receiver.url()]}}, alerts__delivery_timeout=1.0
    )
    receiver.delay = 2.5  # takes the POST, answers 200 after the timeout
    (alert_id,) = raise_alert(store, config)
    dispatcher = Dispatcher(config, store)

    report = dispatcher.run_once(T0)

    assert (report.timed_out, report.retried, report.sent) == (1, 1, 0)
    (attempt,) = delivery_rows(store, alert_id)
    assert attempt.status == "timeout"
    assert "outcome unknown" in attempt.error
    assert "connection error" not in attempt.error.lower()
    assert attempt.latency == pytest.approx(1.0, abs=0.5)

    # The answer comes: the alert is sent, without a second POST.
    wait_until(lambda: dispatcher.run_once(T0 + timedelta(seconds=2)).sent)
    (row,) = alert_rows(store)
    assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)
    (attempt,) = delivery_rows(store, alert_id)
    assert attempt.status == "timeout"
    assert "; then, after " in attempt.error and attempt.error.endswith(" s: delivered")
    assert len(receiver.posts) == 1


@pytest.mark.parametrize("trouble", ["hang", "answers after the grace"])
def test_no_answer_is_a_timeout_and_the_retry_carries_the_same_dedup_key(
    store, alerts_config, receiver, trouble
):
    config = alerts_config(
        alerts__routes={"hook": {"urls": [receiver.url()]}},
        alerts__delivery_timeout=0.5,
        alerts__retry_delay=1,
    )
    if trouble == "hang":
        receiver.hang = True
    else:
        receiver.delay = 0.5 + LATE_ANSWER_GRACE + 1.0  # the socket gives up before
    (alert_id,) = raise_alert(store, config)
    dispatcher = Dispatcher(config, store)

    assert dispatcher.run_once(T0).timed_out == 1
    (row,) = alert_rows(store)
    assert (row.status, row.attempts) == ("pending", 1)
    assert "timeout: no answer within 0.5 s" in row.last_error
    assert "outcome unknown" in row.last_error

    # Its channel stays busy until the socket gives up; then the retry goes out.
    receiver.hang, receiver.delay = False, 0.0
    later = T0 + timedelta(seconds=5)
    wait_until(lambda: dispatcher.run_once(later).sent, timeout=LATE_ANSWER_GRACE + 20)

    assert [d.status for d in delivery_rows(store, alert_id)] == ["timeout", "sent"]
    assert len(receiver.posts) == 2  # at least once: the channel may have it twice ...
    (key,) = set(keys(receiver))  # ... with the same key, to deduplicate by
    assert key == dedup_key(row.fingerprint)


# -- a page outlives max_attempts, until max_age ---------------------------------------------


def attempt_once(store, dispatcher: Dispatcher, alert_id: int, now: datetime) -> int:
    """Run passes at `now` until the alert's next attempt is recorded; the alerts raised.

    A channel whose last attempt timed out is busy until its late answer: passes before
    that do not deliver to it.
    """
    attempts = alert_rows(store, id=alert_id)[0].attempts
    raised = 0
    deadline = time.monotonic() + 30
    while alert_rows(store, id=alert_id)[0].attempts == attempts:
        assert time.monotonic() < deadline, "no delivery attempt in 30 s"
        raised += dispatcher.run_once(now).raised
        time.sleep(0.05)
    return raised


@pytest.mark.parametrize("trouble", ["refused", "reset", "HTTP 500", "timeout"])
def test_a_channel_down_past_max_attempts_gets_the_page_when_it_comes_back(
    store, alerts_config, receivers, trouble
):
    down_for = 6  # attempts, three times alerts.max_attempts
    port = free_port()
    channel = receivers() if trouble != "refused" else None
    fallback = receivers()
    url = channel.url() if channel else f"json://127.0.0.1:{port}/hook"
    config = alerts_config(
        alerts__routes={"oncall": {"urls": [url]}},
        alerts__fallback_urls=fallback.url("fallback"),
        alerts__max_attempts=2,
        alerts__retry_delay=1,
        alerts__max_retry_delay=4,
        alerts__max_age="10m",
        alerts__delivery_timeout=0.6 if trouble == "timeout" else 5.0,
    )
    if channel:
        channel.script = [0 if trouble == "reset" else 500] * down_for
        channel.delay = 1.2 if trouble == "timeout" else 0.0  # its 500 comes too late
    (alert_id,) = raise_alert(store, config)
    dispatcher = Dispatcher(config, store)

    now, raised = T0, 0
    for _ in range(down_for):
        raised += attempt_once(store, dispatcher, alert_id, now)
        now = alert_rows(store, id=alert_id)[0].next_attempt_at
    assert raised == 1  # alert_delivery_failed once, at the second failure
    if channel is None:
        channel = receivers(port)  # the channel comes back
    channel.delay = 0.0
    attempt_once(store, dispatcher, alert_id, now)

    page = alert_rows(store, id=alert_id)[0]
    assert (page.status, page.attempts) == ("sent", down_for + 1)
    statuses = [d.status for d in delivery_rows(store, alert_id)]
    failure = "timeout" if trouble == "timeout" else "failed"
    assert statuses == [failure] * down_for + ["sent"]
    assert [post.status for post in channel.posts][-1] == 200
    assert len(set(keys(channel))) == 1  # every request it saw had the same key
    escalations = [row for row in alert_rows(store) if row.event == "alert_delivery_failed"]
    assert [(row.route, row.status) for row in escalations] == [("fallback", "sent")]
    (told,) = fallback.posts
    assert f"alert #{alert_id} (task_failed) could not be delivered" in told.title
    assert "keeps retrying until 2026-01-10 12:10:00 UTC" in told.message


# -- the dedup key ---------------------------------------------------------------------------


def test_each_alert_has_its_own_key_and_keeps_it_across_retries(store, alerts_config, receiver):
    config = alerts_config(
        alerts__routes={"hook": {"urls": [receiver.url()]}},
        alerts__retry_delay=0,
        alerts__group_window=0,
    )
    receiver.script = [500, 500]
    first = raise_alert(store, config, task_id="a")[0]
    dispatcher = Dispatcher(config, store)
    for second in (0, 10, 20):  # far enough apart that each retry is due
        dispatcher.run_once(T0 + timedelta(seconds=second))
    raise_alert(store, config, task_id="b", now=T0 + timedelta(seconds=30))
    dispatcher.run_once(T0 + timedelta(seconds=30))

    assert [post.status for post in receiver.posts] == [500, 500, 200, 200]
    first_key, *retried, other_key = keys(receiver)
    assert retried == [first_key, first_key]
    assert first_key == dedup_key(alert_rows(store, id=first)[0].fingerprint)
    assert other_key != first_key and other_key.startswith("dagwatch-")


def test_pagerduty_gets_the_dedup_key_in_its_payload_unless_the_url_sets_one(
    store, alerts_config, receiver, monkeypatch
):
    from alerts.notifiers import load_apprise

    load_apprise()
    from apprise.plugins import pagerduty

    # PagerDuty's Events API, played by the loopback receiver.
    monkeypatch.setitem(
        pagerduty.PAGERDUTY_API_LOOKUP, "us", f"http://127.0.0.1:{receiver.port}/v2"
    )
    config = alerts_config(
        alerts__routes={
            "pd": {"urls": ["pagerduty://integration-key@api-key"]},
            "pd-own": {"urls": ["pagerduty://integration-key@api-key?dedup=my-own-key"]},
        },
        alerts__retry_delay=0,
    )
    receiver.script = [500, 500]  # the first attempt of each route fails
    ids = raise_alert(store, config)
    dispatcher = Dispatcher(config, store)

    dispatcher.run_once(T0)
    # a failure is recorded when it happens: as late as the first pass took (seconds, on
    # a busy machine, with Apprise's first import); the retries are due well after it
    dispatcher.run_once(T0 + timedelta(seconds=30))

    assert sorted(post.status for post in receiver.posts) == [200, 200, 500, 500]
    fingerprints = {row.route: row.fingerprint for row in alert_rows(store) if row.id in ids}
    mine = dedup_key(fingerprints["pd"])
    assert sorted(post.body["dedup_key"] for post in receiver.posts) == sorted(
        [mine, mine, "my-own-key", "my-own-key"]
    )
    assert {post.body["event_action"] for post in receiver.posts} == {"trigger"}
    assert {row.status for row in alert_rows(store)} == {"sent"}


# -- alerts.max_age --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"), [("90", 90.0), (90, 90.0), ("90s", 90.0), ("15m", 900.0), ("24h", 86400.0)]
)
def test_max_age_is_seconds_or_a_number_with_a_unit(config, raw, seconds):
    assert config.with_overrides(alerts__max_age=raw)["alerts.max_age"] == seconds


@pytest.mark.parametrize("raw", ["soon", "24 hours", "h", "0"])
def test_a_bad_max_age_names_the_key_and_the_value(environ, raw):
    from engine.config import load_config
    from engine.exceptions import ConfigError

    with pytest.raises(ConfigError, match=f"alerts.max_age = '{raw}'"):
        load_config({**environ, "DAGWATCH__ALERTS__MAX_AGE": raw})


def test_a_resent_alert_gets_a_fresh_max_age(store, alerts_config, dead_url):
    from alerts import outbox

    config = alerts_config(
        alerts__routes={"oncall": {"urls": [dead_url]}}, alerts__retry_delay=0, alerts__max_age=10
    )
    (alert_id,) = raise_alert(store, config)
    dispatcher = Dispatcher(config, store)
    dispatcher.run_once(T0)
    assert dispatcher.run_once(T0 + timedelta(seconds=10)).failed == 1

    resent_at = T0 + timedelta(hours=1)
    with store.session() as session:
        assert outbox.requeue(session, alert_id, resent_at)
    report = dispatcher.run_once(resent_at)

    assert (report.retried, report.failed) == (1, 0)  # not given up at once: 10 s from now
    (row,) = alert_rows(store)
    assert (row.status, row.attempts) == ("pending", 1)
    assert dispatcher.run_once(resent_at + timedelta(seconds=10)).failed == 1
