"""The alert outbox: rows written with the state change that caused them, read by the dispatcher.

Writers call `enqueue` inside the transaction of the change (a transition listener, the
SLA check), so an alert exists exactly when its cause does. One row per fingerprint: a
second enqueue of the same occurrence is a no-op. The dispatcher claims due rows
(`alerts.store.due`, `alerts.store.claim`), and records each delivery attempt with
`record_delivery`; an attempt that timed out (outcome unknown) and was answered later is
settled by `settle_late`. The rows' statuses and their transitions are in `alerts.states`;
every SQL statement is in `alerts.store`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from alerts import inflight
from alerts import store as alert_store
from alerts.states import AlertStatus, DeliveryStatus
from engine.exceptions import NotFound
from engine.store.audit import record_audit

#: The outbox's statuses (`alerts.states.AlertStatus`), by the names its callers use.
PENDING = AlertStatus.PENDING
SENT = AlertStatus.SENT
FAILED = AlertStatus.FAILED
SUPPRESSED = AlertStatus.SUPPRESSED
STATUSES = tuple(status.value for status in AlertStatus)
#: A delivery attempt's status when the channel did not answer in time: it may have the message.
TIMEOUT = DeliveryStatus.TIMEOUT


@dataclass(frozen=True)
class NewAlert:
    """An alert to write: what happened, for which route, and the context its message needs."""

    event: str
    route: str
    fingerprint: str
    severity: str
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    group_key: str | None = None
    #: a row born suppressed (e.g. a deadline folded into a failure) keeps its reason here
    suppressed_reason: str | None = None
    #: where it is delivered, one delivery at a time (default: its route)
    channel: str | None = None


def enqueue(session: Session, alerts: Sequence[NewAlert], now: datetime) -> list[int]:
    """Write pending rows, skipping fingerprints already there; returns the new rows' ids."""
    if not alerts:
        return []
    unique = {alert.fingerprint: alert for alert in alerts}  # one statement, no self-conflict
    rows = [
        {
            "fingerprint": alert.fingerprint,
            "event": alert.event,
            "severity": alert.severity,
            "route": alert.route,
            "dag_id": alert.dag_id,
            "run_id": alert.run_id,
            "task_id": alert.task_id,
            "payload": alert.payload,
            "status": (SUPPRESSED if alert.suppressed_reason else PENDING).value,
            "last_error": alert.suppressed_reason,
            "attempts": 0,
            "count": 1,
            "created_at": now,
            "next_attempt_at": None if alert.suppressed_reason else now,
            "group_key": alert.group_key,
            "channel": alert.channel or alert.route,
            "queued_at": now,
        }
        for alert in unique.values()
    ]
    return alert_store.insert_alerts(session, rows)


def record_delivery(
    session: Session,
    alert_id: int,
    *,
    attempt: int,
    ok: bool,
    latency: float,
    error: str | None,
    now: datetime,
    status: str,
    next_attempt_at: datetime | None = None,
    count: int | None = None,
    timed_out: bool = False,
) -> None:
    """Record one delivery attempt and move the row to `status` (pending again to retry).

    The attempt recorded as started before its send (`inflight.begin`) gets its outcome;
    one that never started (it could not be sent at all) is written now.
    """
    outcome = DeliveryStatus.SENT if ok else TIMEOUT if timed_out else DeliveryStatus.FAILED
    if not inflight.finish(
        session, alert_id, attempt, outcome, at=now, latency=latency, error=error
    ):
        alert_store.insert_delivery(
            session, alert_id, attempt=attempt, at=now, status=outcome, latency=latency, error=error
        )
    values: dict[str, Any] = {
        "attempts": attempt,
        "next_attempt_at": next_attempt_at,
        "last_error": error,
        "claimed_by": None,
    }
    if ok:
        values["sent_at"] = now
    if count is not None:
        values["count"] = count
    alert_store.transition_alert(
        session, alert_id, expected=PENDING, to=AlertStatus(status), values=values
    )


def settle_late(
    session: Session, alert_id: int, *, attempt: int, ok: bool, note: str, now: datetime
) -> bool:
    """A timed-out attempt answered after all: note it; if it went through, the alert is sent.

    Compare-and-set: only while the row still waits for its next attempt (no other
    dispatcher delivered or claimed it since). Returns whether the alert became sent.
    """
    alert_store.note_late_answer(session, alert_id, attempt=attempt, note=note)
    return ok and alert_store.settle_sent(session, alert_id, attempt=attempt, now=now)


def mark(
    session: Session,
    alert_ids: Sequence[int],
    *,
    status: str,
    reason: str | None,
    next_attempt_at: datetime | None = None,
    expected: AlertStatus = PENDING,
) -> list[int]:
    """Move pending rows (`expected`) to `status` without a delivery attempt (suppressed,
    deferred, given up); returns those moved: a row that changed meanwhile is left alone."""
    return alert_store.transition_alerts(
        session,
        alert_ids,
        expected=expected,
        to=AlertStatus(status),
        values={"last_error": reason, "next_attempt_at": next_attempt_at},
    )


def requeue(session: Session, alert_id: int, now: datetime) -> bool:
    """Deliver a failed or suppressed alert again (`alerts resend`); False if it is unknown.

    Its attempt count and its alerts.max_age start over; the earlier attempts stay in its
    delivery history.
    """
    if alert_store.requeue(session, alert_id, now):
        return True
    return alert_store.status_of(session, alert_id) is not None


def resend(session: Session, alert_id: int, *, actor: str, now: datetime) -> None:
    """Queue an alert for delivery again and write the audit row (`alerts resend`, the
    console's Resend); NotFound when there is no such alert."""
    if not requeue(session, alert_id, now):
        raise NotFound(f"alert {alert_id} does not exist")
    record_audit(session, actor=actor, event="alerts.resend", extra={"alert_id": alert_id})
