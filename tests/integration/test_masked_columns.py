"""Every metastore column that can carry user text is masked as it is written, whichever
function writes it, on SQLite and PostgreSQL; ciphertext under `sealed_` keys is kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from alerts import outbox
from engine.masking import mask_secret
from engine.states import TaskState
from engine.store import runs, transitions
from engine.store.audit import record_audit
from engine.store.dags import _set_import_error
from engine.store.models import (
    Alert,
    AlertDelivery,
    AuditLog,
    CallbackRecord,
    ImportError_,
    StateTransition,
    TaskInstance,
    TaskTry,
)
from tests.integration.test_transitions import make_run, make_tis

SECRET = "hunter2-column-secret"
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def known(store):
    """A metastore, and a secret this process knows."""
    mask_secret(SECRET)
    return store


def _running_try(store) -> int:
    run = make_run(store)
    (ti_id,) = make_tis(store, run, TaskState.RUNNING)
    with store.session() as session:
        ti = session.get(TaskInstance, ti_id)
        ti.try_number = 1
        runs.start_try(session, ti, hostname="h", pid=1, log_path="x.log", now=NOW)
    return ti_id


def _one(store, column) -> object:
    with store.session(readonly=True) as session:
        return session.scalars(select(column)).one()


def test_a_transition_reason_is_masked_for_the_row_and_the_listeners(known):
    seen = []

    def listener(session, events):
        seen.extend(event.reason for event in events)

    ti_id = _running_try(known)
    transitions.add_transition_listener(listener)
    try:
        with known.session() as session:
            transitions.transition_task_instance(
                session, ti_id, expected=TaskState.RUNNING, to=TaskState.FAILED, at=NOW,
                reason=f"RuntimeError: login {SECRET} refused",
            )  # fmt: skip
    finally:
        transitions.remove_transition_listener(listener)

    assert seen == ["RuntimeError: login *** refused"]
    with known.session(readonly=True) as session:
        reasons = session.scalars(select(StateTransition.reason)).all()
    assert reasons == ["RuntimeError: login *** refused"]


def test_a_try_error_is_masked_by_the_prebuilt_statement(known):
    ti_id = _running_try(known)
    with known.session() as session:
        runs.finish_try(
            session, ti_id, 1, state=TaskState.FAILED, end_date=NOW, duration=1.0,
            error=f"ValueError: {SECRET}\n{SECRET}!",
        )  # fmt: skip

    assert _one(known, TaskTry.error) == "ValueError: ***\n***!"


def test_a_callback_error_is_masked(known):
    with known.session() as session:
        runs.record_callback(
            session, at=NOW, dag_id="d", run_id="r", task_id=None, try_number=None,
            kind="on_failure_callback", callback="cb", status="failed", duration=0.1,
            error=f"KeyError: '{SECRET}'",
        )  # fmt: skip

    assert _one(known, CallbackRecord.error) == "KeyError: '***'"


def test_an_alert_payload_is_masked_at_every_depth_but_sealed_urls_are_kept(known):
    sealed = f"gAAAA-ciphertext-{SECRET}"  # contrived: ciphertext is never masked
    payload = {
        "exception": f"boom {SECRET}",
        "misses": [{"task_id": "t", "note": f"({SECRET})"}],
        SECRET: "a key too",
        "target": {"urls": [], "sealed_urls": sealed},
    }
    row = outbox.NewAlert("task_failed", "oncall", "fp", "error", payload=payload)
    with known.session() as session:
        outbox.enqueue(session, [row], NOW)

    stored = _one(known, Alert.payload)
    assert SECRET not in json.dumps({k: v for k, v in stored.items() if k != "target"})
    assert stored["exception"] == "boom ***"
    assert stored["misses"] == [{"task_id": "t", "note": "(***)"}]
    assert stored["***"] == "a key too"
    assert stored["target"]["sealed_urls"] == sealed


def test_delivery_errors_suppression_reasons_and_last_errors_are_masked(known):
    suppressed = outbox.NewAlert(
        "task_failed", "r", "fp2", "error", suppressed_reason=f"folded: {SECRET}"
    )
    pending = outbox.NewAlert("task_failed", "r", "fp1", "error")
    with known.session() as session:
        pending_id, suppressed_id = outbox.enqueue(session, [pending, suppressed], NOW)
        outbox.record_delivery(
            session, pending_id, attempt=1, ok=False, latency=0.1, now=NOW,
            error=f"json://u:{SECRET}@host refused", status=outbox.PENDING,
        )  # fmt: skip
    with known.session(readonly=True) as session:
        last_errors = dict(session.execute(select(Alert.id, Alert.last_error)).all())
        (delivery,) = session.scalars(select(AlertDelivery.error)).all()
    assert delivery == last_errors[pending_id] == "json://u:***@host refused"
    assert last_errors[suppressed_id] == "folded: ***"

    with known.session() as session:
        outbox.mark(session, [pending_id], status=outbox.SUPPRESSED, reason=f"{SECRET} said no")
    with known.session(readonly=True) as session:
        assert session.get(Alert, pending_id).last_error == "*** said no"


def test_audit_details_and_import_errors_are_masked(known):
    with known.session() as session:
        record_audit(session, actor="ops", event="x", extra={"args": ["--password", SECRET]})
        _set_import_error(session, "/dags/f.py", f"Traceback\nRuntimeError: {SECRET}", NOW)

    assert _one(known, AuditLog.extra) == {"args": ["--password", "***"]}
    assert _one(known, ImportError_.stacktrace) == "Traceback\nRuntimeError: ***"


def test_a_process_that_does_not_know_the_secret_writes_it_as_given(store):
    """Masking is per process: what this process never learnt is not guessed at."""
    with store.session() as session:
        record_audit(session, actor="ops", event="x", extra={"note": SECRET})

    assert _one(store, AuditLog.extra) == {"note": SECRET}
