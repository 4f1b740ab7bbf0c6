"""Nothing lost, nothing silently repeated: a real `dagwatch scheduler` killed with SIGKILL at
each step of a delivery, then started again, against loopback HTTP receivers.

One DAG: a task sleeps past its 1 s SLA; the `oncall` route pages the miss to one receiver,
the DAG's `sla_miss_callback` (an `AppriseNotifier`) notifies another. The scheduler is
killed (1) right after the miss is committed, (2) while the page's POST is held open by
the receiver, (3) after the receiver answered, before the outcome is written. Every time,
the restarted scheduler delivers what was not delivered; a page that may have gone twice
says so, in the message, the outbox row and the listing.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from alerts.inflight import DUPLICATE_TITLE, INTERRUPTED
from engine import api, runtime
from engine.parsing.parser import process_folders
from engine.store.models import CallbackRequest, SlaMiss
from tests.alerts.conftest import (
    HttpReceiver,
    alert_rows,
    delivery_rows,
    start_receiver,
    stop_receiver,
)
from tests.helpers import run_cli, start_cli

DAG_FILE = """
import time
from datetime import timedelta
from alerts import AppriseNotifier
from engine import DAG, task

with DAG("nightly", schedule=None, tags=["critical"],
         sla_miss_callback=AppriseNotifier(urls="env:CALLBACK_URL")):
    @task(sla=timedelta(seconds=1))
    def load():
        time.sleep(4)

    load()
"""
WAIT = 90.0  # generous: the machine is shared


@pytest.fixture
def callback_receiver() -> Iterator[HttpReceiver]:
    started = start_receiver()
    yield started
    stop_receiver(started)


@pytest.fixture
def env(store, environ, receiver, callback_receiver) -> dict[str, str]:
    config = runtime.get_config().with_overrides(
        core__load_examples=False, core__dags_are_paused_at_creation=False
    )
    folder = config["core.dags_folder"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nightly.py").write_text(textwrap.dedent(DAG_FILE))
    assert process_folders(store, config).import_errors == 0
    # one message per alert (no incident grouping): the outbox row the test follows is the page
    routes = {"oncall": {"urls": ["env:PAGER_URL"], "events": ["sla_missed"], "group_by": []}}
    return {
        **environ,
        "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        "DAGWATCH__CORE__EXECUTOR": "local",
        "DAGWATCH__SCHEDULER__LOOP_INTERVAL": "0.2",
        "DAGWATCH__SCHEDULER__HEARTBEAT_TIMEOUT": "5",
        "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": store.engine.url.render_as_string(False),
        "DAGWATCH__ALERTS__ROUTES": json.dumps(routes),
        "DAGWATCH__ALERTS__DELIVERY_TIMEOUT": "10",
        "DAGWATCH__ALERTS__GROUP_WINDOW": "0",
        "PAGER_URL": receiver.url("pager"),
        "CALLBACK_URL": callback_receiver.url("callback"),
    }


def start(env: dict[str, str], *, drain: bool = False) -> subprocess.Popen:
    args = ["scheduler", *(["--drain"] if drain else [])]
    return start_cli(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL, and reap it (its pid is gone, as after a real crash)."""
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.stdout is not None
    process.stdout.close()  # its attempt processes may live on, holding the pipe


def wait_until(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def restart_and_drain(env: dict[str, str]) -> str:
    """A new scheduler that runs until the run is over, then delivers what is due."""
    process = start(env, drain=True)
    output, _ = process.communicate(timeout=WAIT * 2)
    assert process.returncode == 0, output
    return output


def sla_pages(receiver: HttpReceiver) -> list[Any]:
    return [post for post in receiver.posts if "load" in post.title + post.message]


def assert_nothing_lost(store, receiver, callback_receiver) -> None:
    """The routed page and the callback's notification arrived (each at least once); a
    repeat carries the duplicate mark and the same dedup key."""
    wait_until(lambda: sla_pages(receiver), "the routed SLA page", 30)
    wait_until(lambda: sla_pages(callback_receiver), "the sla_miss_callback notification", 30)
    for who in (receiver, callback_receiver):
        posts = sla_pages(who)
        keys = {post.headers.get("Idempotency-Key") for post in posts}
        assert len(keys) == 1, keys  # one alert, one dedup key on every attempt
        for repeat in posts[1:]:
            assert repeat.title.startswith(DUPLICATE_TITLE), repeat
            assert "Possible duplicate" in repeat.message
    rows = alert_rows(store)
    assert {(row.event, row.status) for row in rows} == {("sla_missed", "sent")}
    assert len(rows) == 2  # the route's and the notifier's, once each
    for row in rows:
        delivered = len(sla_pages(receiver if row.route == "oncall" else callback_receiver))
        # never repeated silently (marked when a send was interrupted, whether or not the
        # interrupted one reached the channel: the dispatcher cannot know)
        assert row.possible_duplicate or delivered == 1, (row.route, delivered)
    with store.session() as session:
        requests = session.scalars(select(CallbackRequest)).all()
        assert [(r.kind, r.state) for r in requests] == [("sla_miss_callback", "done")]


@pytest.mark.slow
def test_killed_right_after_the_miss_is_committed(store, env, receiver, callback_receiver):
    receiver.hang = True  # the page cannot be sent before the kill either
    api.trigger_dag(store, "nightly", actor="test")
    first = start(env)
    try:

        def missed() -> bool:
            with store.session() as session:
                return session.scalar(select(SlaMiss.id)) is not None

        wait_until(missed, "the SLA miss")
    finally:
        kill(first)
    with store.session() as session:
        (request,) = session.scalars(select(CallbackRequest)).all()
        assert request.kind == "sla_miss_callback"  # written with the miss, whatever ran after
    receiver.hang = False
    receiver.release.set()

    restart_and_drain(env)

    assert_nothing_lost(store, receiver, callback_receiver)


@pytest.mark.slow
def test_killed_during_the_post_the_page_is_sent_again_marked(
    store, env, receiver, callback_receiver
):
    receiver.hang = True  # the receiver holds the request open: the POST is in flight
    api.trigger_dag(store, "nightly", actor="test")
    first = start(env)
    try:
        wait_until(lambda: sla_pages(receiver), "the page's POST")
    finally:
        kill(first)
    (row,) = [r for r in alert_rows(store) if r.route == "oncall"]
    assert row.status == "pending"
    assert [d.status for d in delivery_rows(store, row.id)] == ["started"]
    receiver.hang = False
    receiver.release.set()

    restart_and_drain(env)

    assert_nothing_lost(store, receiver, callback_receiver)
    first_post, second_post = sla_pages(receiver)
    assert not first_post.title.startswith(DUPLICATE_TITLE)
    assert second_post.title.startswith(DUPLICATE_TITLE)
    (row,) = [r for r in alert_rows(store) if r.route == "oncall"]
    assert (row.status, row.attempts, row.possible_duplicate) == ("sent", 2, True)
    assert [d.status for d in delivery_rows(store, row.id)] == [INTERRUPTED, "sent"]
    listing = json.loads(
        run_cli("alerts", "list", "--output", "json", env=env).stdout  # the CLI listing
    )
    (listed,) = [a for a in listing if a["route"] == "oncall"]
    assert listed["possible_duplicate"] is True and listed["attempts"] == 2


@contextlib.contextmanager
def writes_held(store) -> Iterator[None]:
    """Hold the metastore's writes to the delivery record (a lock in another connection)."""
    url = store.engine.url
    if url.get_backend_name() == "sqlite":
        connection = sqlite3.connect(
            url.database, timeout=30, isolation_level=None, check_same_thread=False
        )
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
    else:
        with store.engine.connect() as connection:
            transaction = connection.begin()
            connection.execute(text("LOCK TABLE alert_delivery IN ACCESS EXCLUSIVE MODE"))
            try:
                yield
            finally:
                transaction.rollback()


@pytest.mark.slow
def test_killed_after_the_post_before_the_outcome_is_written(
    store, env, receiver, callback_receiver
):
    held = contextlib.ExitStack()
    answered = receiver.answer

    def answer_then_hold(handler) -> None:
        if not receiver.posts:  # the first page: its outcome cannot be written once answered
            held.enter_context(writes_held(store))
        answered(handler)

    receiver.answer = answer_then_hold  # type: ignore[method-assign]
    api.trigger_dag(store, "nightly", actor="test")
    first = start(env)
    try:
        wait_until(lambda: sla_pages(receiver) and sla_pages(receiver)[0].status == 200, "the page")
        time.sleep(0.3)  # the dispatcher has the answer and waits on the metastore
    finally:
        kill(first)
        held.close()
    (row,) = [r for r in alert_rows(store) if r.route == "oncall"]
    assert row.status == "pending"  # delivered, but the outbox could not say so

    restart_and_drain(env)

    assert_nothing_lost(store, receiver, callback_receiver)
    (row,) = [r for r in alert_rows(store) if r.route == "oncall"]
    assert (row.attempts, row.possible_duplicate) == (2, True)
    assert len(sla_pages(receiver)) == 2
