"""The outbox's state machines and their one compare-and-set write path (`alerts.store`)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from alerts import outbox
from alerts import store as alert_store
from alerts.dispatcher import Dispatcher
from alerts.states import (
    ALERT_FINISHED,
    ALERT_INITIAL,
    ALERT_TRANSITIONS,
    DELIVERY_TRANSITIONS,
    AlertStatus,
    DeliveryStatus,
    alert_transition_allowed,
    delivery_transition_allowed,
)
from engine.exceptions import IllegalTransition, TransitionConflict
from tests.alerts.conftest import T0, alert_rows, delivery_rows, raise_alert

A, D = AlertStatus, DeliveryStatus
LEASE = T0 + timedelta(minutes=2)
#: The columns a refused transition must leave as they were.
COLUMNS = ("status", "attempts", "next_attempt_at", "sent_at", "last_error", "claimed_by")


# -- the tables ----------------------------------------------------------------------------


def test_every_status_has_its_row_in_the_tables():
    assert set(ALERT_TRANSITIONS) == set(AlertStatus)
    assert set(DELIVERY_TRANSITIONS) == set(DeliveryStatus)
    assert outbox.STATUSES == ("pending", "sent", "failed", "suppressed")


@pytest.mark.parametrize("to", [A.SENT, A.FAILED, A.SUPPRESSED])
def test_an_outcome_is_reached_from_pending_only(to):
    assert [s for s in AlertStatus if alert_transition_allowed(s, to)] == [A.PENDING]


def test_pending_is_reached_from_every_status():
    # pending -> pending: claim, retry, deferral, release; the others: an operator's resend
    assert all(alert_transition_allowed(status, A.PENDING) for status in AlertStatus)


def test_a_finished_row_moves_only_back_to_pending():
    for status in ALERT_FINISHED:
        assert [to for to in AlertStatus if alert_transition_allowed(status, to)] == [A.PENDING]
    assert A.PENDING not in ALERT_FINISHED
    assert ALERT_INITIAL == {A.PENDING, A.SUPPRESSED}


def test_a_delivery_attempt_ends_once_from_started():
    for to in (D.SENT, D.FAILED, D.TIMEOUT, D.INTERRUPTED):
        assert [s for s in DeliveryStatus if delivery_transition_allowed(s, to)] == [D.STARTED]
    assert not any(delivery_transition_allowed(s, D.STARTED) for s in DeliveryStatus)
    assert not delivery_transition_allowed(D.TIMEOUT, D.SENT)  # a late answer is a note


# -- the write path ------------------------------------------------------------------------


def _snapshot(store, alert_id):
    (row,) = [row for row in alert_rows(store) if row.id == alert_id]
    return {column: getattr(row, column) for column in COLUMNS}


def _sent(store, config):
    (alert_id,) = raise_alert(store, config)
    with store.session() as session:
        outbox.record_delivery(
            session, alert_id, attempt=1, ok=True, latency=0.1, error=None, now=T0, status=A.SENT
        )
    return alert_id


def test_a_disallowed_transition_is_refused_and_changes_nothing(store, alerts_config):
    config = alerts_config(alerts__routes={"r": {"urls": ["json://127.0.0.1:9/x"]}})
    alert_id = _sent(store, config)
    before = _snapshot(store, alert_id)

    with pytest.raises(IllegalTransition) as refused, store.session() as session:
        alert_store.transition_alert(
            session, alert_id, expected=A.SENT, to=A.FAILED, values={"last_error": "no"}
        )
    assert str(refused.value) == "alert: sent -> failed is not allowed; allowed from: pending"
    with pytest.raises(IllegalTransition), store.session() as session:
        outbox.mark(session, [alert_id], status=A.SUPPRESSED, reason="no", expected=A.SENT)
    with pytest.raises(IllegalTransition, match="sent -> failed"), store.session() as session:
        alert_store.transition_delivery(session, alert_id, 1, expected=D.SENT, to=D.FAILED)
    with pytest.raises(IllegalTransition, match="cannot be sent"), store.session() as session:
        alert_store.insert_alerts(session, [{"fingerprint": "x", "status": "sent"}])

    assert _snapshot(store, alert_id) == before
    assert [d.status for d in delivery_rows(store, alert_id)] == ["sent"]
    assert len(alert_rows(store)) == 1


def test_a_row_not_in_the_expected_status_is_left_alone(store, alerts_config):
    config = alerts_config(alerts__routes={"r": {"urls": ["json://127.0.0.1:9/x"]}})
    alert_id = _sent(store, config)
    before = _snapshot(store, alert_id)

    with pytest.raises(TransitionConflict) as conflict, store.session() as session:
        outbox.record_delivery(  # a second outcome for a row already sent
            session, alert_id, attempt=2, ok=False, latency=0.1, error="x", now=T0, status=A.FAILED
        )
    assert str(conflict.value) == (
        f"alert {alert_id} is sent, not pending (it changed meanwhile); not moved to failed"
    )
    with store.session() as session:
        assert outbox.mark(session, [alert_id], status=A.SUPPRESSED, reason="late") == []
        with pytest.raises(TransitionConflict, match="does not exist"):
            alert_store.transition_alert(session, 999, expected=A.PENDING, to=A.SENT)

    assert _snapshot(store, alert_id) == before
    assert [d.status for d in delivery_rows(store, alert_id)] == ["sent"]


def test_resend_moves_a_finished_row_back_to_pending(store, alerts_config):
    config = alerts_config(alerts__routes={"r": {"urls": ["json://127.0.0.1:9/x"]}})
    alert_id = _sent(store, config)
    later = T0 + timedelta(hours=1)
    with store.session() as session:
        assert outbox.requeue(session, alert_id, later)
        assert not alert_store.requeue(session, alert_id, later)  # pending and due: no change
        assert not outbox.requeue(session, 999, later)
    row = _snapshot(store, alert_id)
    assert (row["status"], row["attempts"], row["next_attempt_at"]) == ("pending", 0, later)


# -- two dispatchers, one row --------------------------------------------------------------


def test_of_two_claims_of_one_row_one_wins(store, alerts_config):
    """The loser's UPDATE waits for the winner's transaction, then finds the row leased."""
    config = alerts_config(alerts__routes={"r": {"urls": ["json://127.0.0.1:9/x"]}})
    (alert_id,) = raise_alert(store, config)
    won: dict[str, bool] = {}
    first_claimed = threading.Event()
    second_started = threading.Event()

    def first() -> None:
        with store.session() as session:
            won["first"] = alert_store.claim(session, alert_id, at=T0, lease_until=LEASE)
            first_claimed.set()
            second_started.wait(10)
            # the second claim is now blocked on this transaction's lock (or about to be)
            threading.Event().wait(0.3)

    def second() -> None:
        first_claimed.wait(10)
        second_started.set()
        with store.session() as session:
            won["second"] = alert_store.claim(session, alert_id, at=T0, lease_until=LEASE)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert won == {"first": True, "second": False}
    row = _snapshot(store, alert_id)
    assert (row["status"], row["next_attempt_at"]) == ("pending", LEASE)


def test_two_dispatchers_deliver_a_row_once(store, alerts_config, receiver):
    config = alerts_config(alerts__routes={"hook": {"urls": [receiver.url("hook")]}})
    (alert_id,) = raise_alert(store, config)
    dispatchers = [Dispatcher(config, store) for _ in range(2)]
    start = threading.Barrier(2)
    reports = []

    def run(dispatcher: Dispatcher) -> None:
        start.wait(10)
        reports.append(dispatcher.run_once(T0 + timedelta(seconds=1)))

    threads = [threading.Thread(target=run, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(reports) == 2
    assert sorted(report.sent for report in reports) == [0, 1]
    assert len(receiver.posts) == 1
    assert [(d.attempt, d.status) for d in delivery_rows(store, alert_id)] == [(1, "sent")]
    (row,) = alert_rows(store)
    assert (row.status, row.attempts) == ("sent", 1)
