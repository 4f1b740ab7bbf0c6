"""A delivery a crash interrupted: retried, counted and marked as a possible duplicate."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from sqlalchemy import update

from alerts import inflight
from alerts.dispatcher import Dispatcher
from engine.store.models import Alert
from tests.alerts.conftest import T0, alert_rows, delivery_rows, raise_alert


def interrupted_claim(store, alert_id: int, by: str) -> None:
    """What a dispatcher that died mid-send leaves: its lease, and a started attempt."""
    with store.session() as session:
        inflight.begin(session, alert_id, attempts=0, at=T0, by=by)
        session.execute(
            update(Alert)
            .where(Alert.id == alert_id)
            .values(next_attempt_at=T0 + timedelta(hours=1))
        )


def test_an_interrupted_delivery_is_sent_again_marked(store, alerts_config, receiver):
    config = alerts_config(alerts__routes={"hook": {"urls": [receiver.url("hook")]}})
    (alert_id,) = raise_alert(store, config)
    interrupted_claim(store, alert_id, f"{socket.gethostname()}:999999999")

    dispatcher = Dispatcher(config, store)
    dispatcher.run_once(T0 + timedelta(seconds=1))  # released at once: that pid is gone

    (post,) = receiver.wait_for(1)
    assert post.title.startswith(inflight.DUPLICATE_TITLE)
    assert "Possible duplicate" in post.message
    assert post.headers["Idempotency-Key"] in post.message  # the key to fold it by
    (row,) = alert_rows(store)
    assert (row.status, row.attempts, row.possible_duplicate, row.claimed_by) == (
        "sent",
        2,
        True,
        None,
    )
    attempts = delivery_rows(store, alert_id)
    assert [(d.attempt, d.status) for d in attempts] == [(1, "interrupted"), (2, "sent")]
    assert "interrupted" in attempts[0].error


def test_a_row_held_by_a_live_dispatcher_waits_for_its_lease(store, alerts_config, receiver):
    config = alerts_config(alerts__routes={"hook": {"urls": [receiver.url("hook")]}})
    (alert_id,) = raise_alert(store, config)
    interrupted_claim(store, alert_id, f"{socket.gethostname()}:{os.getppid()}")
    other_host = raise_alert(store, config, run_id="manual__2")[0]
    interrupted_claim(store, other_host, "elsewhere.example:1")

    Dispatcher(config, store).run_once(T0 + timedelta(seconds=1))

    assert receiver.posts == []
    assert [r.status for r in alert_rows(store)] == ["pending", "pending"]
    with store.session() as session:
        released = inflight.release_orphans(session, T0, alive=lambda pid: False)
    assert released == [alert_id]  # this host's dead dispatcher; never another host's


def test_a_delivery_without_a_crash_is_not_marked(store, alerts_config, receiver):
    config = alerts_config(alerts__routes={"hook": {"urls": [receiver.url("hook")]}})
    (alert_id,) = raise_alert(store, config)
    Dispatcher(config, store).run_once(T0)
    (post,) = receiver.wait_for(1)
    assert not post.title.startswith(inflight.DUPLICATE_TITLE)
    (row,) = alert_rows(store)
    assert (row.attempts, row.possible_duplicate) == (1, False)
    assert [d.status for d in delivery_rows(store, alert_id)] == ["sent"]
