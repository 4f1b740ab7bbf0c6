"""The alert outbox: rows written with the state change that caused them, read by the dispatcher.

Writers call `enqueue` inside the transaction of the change (a transition listener, the
SLA check), so an alert exists exactly when its cause does. One row per fingerprint: a
second enqueue of the same occurrence is a no-op. The dispatcher claims due rows with
`due`, and records each delivery attempt with `record_delivery`; an attempt that timed out
(outcome unknown) and was answered later is settled by `settle_late`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from alerts import inflight
from engine.exceptions import NotFound
from engine.store.audit import record_audit
from engine.store.db import upsert_insert
from engine.store.models import Alert, AlertDelivery

PENDING = "pending"
SENT = "sent"
FAILED = "failed"
SUPPRESSED = "suppressed"
STATUSES = (PENDING, SENT, FAILED, SUPPRESSED)
#: A delivery attempt's status when the channel did not answer in time: it may have the message.
TIMEOUT = "timeout"


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
            "status": SUPPRESSED if alert.suppressed_reason else PENDING,
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
    statement = (
        upsert_insert(session, Alert)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["fingerprint"])
        .returning(Alert.id)
    )
    return list(session.scalars(statement))


def due(session: Session, now: datetime, limit: int = 100, busy: Sequence[str] = ()) -> list[Alert]:
    """Pending rows whose next attempt is due, oldest first, except those of `busy` channels."""
    statement = select(Alert).where(Alert.status == PENDING, Alert.next_attempt_at <= now)
    if busy:
        statement = statement.where(or_(Alert.channel.is_(None), Alert.channel.notin_(busy)))
    statement = statement.order_by(Alert.next_attempt_at, Alert.id).limit(limit)
    return list(session.scalars(statement))


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
    outcome = {
        "status": SENT if ok else TIMEOUT if timed_out else FAILED,
        "latency": latency,
        "error": error,
    }
    if not inflight.finish(session, alert_id, attempt, {"at": now, **outcome}):
        session.execute(
            insert(AlertDelivery).values(alert_id=alert_id, attempt=attempt, at=now, **outcome)
        )
    values: dict[str, Any] = {
        "attempts": attempt,
        "status": status,
        "next_attempt_at": next_attempt_at,
        "last_error": error,
        "claimed_by": None,
    }
    if ok:
        values["sent_at"] = now
    if count is not None:
        values["count"] = count
    session.execute(update(Alert).where(Alert.id == alert_id).values(**values))


def settle_late(
    session: Session, alert_id: int, *, attempt: int, ok: bool, note: str, now: datetime
) -> bool:
    """A timed-out attempt answered after all: note it; if it went through, the alert is sent.

    Compare-and-set: only while the row still waits for its next attempt (no other
    dispatcher delivered or claimed it since). Returns whether the alert became sent.
    """
    last = select(func.max(AlertDelivery.id)).where(AlertDelivery.alert_id == alert_id)
    session.execute(
        update(AlertDelivery)
        .where(AlertDelivery.id == last.scalar_subquery(), AlertDelivery.attempt == attempt)
        .where(AlertDelivery.status == TIMEOUT)
        .values(error=func.coalesce(AlertDelivery.error, "") + f"; {note}")
    )
    if not ok:
        return False
    return bool(
        session.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.status == PENDING, Alert.attempts == attempt)
            .values(status=SENT, sent_at=now, next_attempt_at=None, last_error=None)
        ).rowcount
    )


def mark(
    session: Session,
    alert_ids: Sequence[int],
    *,
    status: str,
    reason: str | None,
    next_attempt_at: datetime | None = None,
) -> None:
    """Set the status of rows without a delivery attempt (suppressed, deferred, re-queued)."""
    if alert_ids:
        session.execute(
            update(Alert)
            .where(Alert.id.in_(list(alert_ids)))
            .values(status=status, last_error=reason, next_attempt_at=next_attempt_at)
        )


def last_sent_in_group(session: Session, group_key: str) -> Alert | None:
    """The most recent delivered alert of a group (for the group window)."""
    statement = (
        select(Alert)
        .where(Alert.group_key == group_key, Alert.status == SENT)
        .order_by(Alert.sent_at.desc())
        .limit(1)
    )
    return session.scalars(statement).first()


def sent_since(session: Session, route: str, since: datetime) -> int:
    """Alerts of `route` delivered since `since` (for its rate limit)."""
    statement = select(func.count(Alert.id)).where(
        Alert.route == route, Alert.sent_at >= since, Alert.status == SENT
    )
    return int(session.scalar(statement) or 0)


def listing(
    session: Session,
    *,
    status: str | None = None,
    dag_id: str | None = None,
    event: str | None = None,
    limit: int = 100,
) -> list[Alert]:
    """Alerts, newest first (for `alerts list` and the console)."""
    conditions = []
    if status:
        conditions.append(Alert.status == status)
    if dag_id:
        conditions.append(Alert.dag_id == dag_id)
    if event:
        conditions.append(Alert.event == event)
    statement = (
        select(Alert).where(and_(*conditions)).order_by(Alert.created_at.desc(), Alert.id.desc())
    )
    return list(session.scalars(statement.limit(limit)))


def deliveries(session: Session, alert_ids: Sequence[int]) -> dict[int, list[AlertDelivery]]:
    """The delivery attempts of these alerts, in order."""
    by_alert: dict[int, list[AlertDelivery]] = {alert_id: [] for alert_id in alert_ids}
    if not alert_ids:
        return by_alert
    statement = (
        select(AlertDelivery)
        .where(AlertDelivery.alert_id.in_(list(alert_ids)))
        .order_by(AlertDelivery.alert_id, AlertDelivery.id)
    )
    for row in session.scalars(statement):
        by_alert[row.alert_id].append(row)
    return by_alert


def requeue(session: Session, alert_id: int, now: datetime) -> bool:
    """Deliver a failed or suppressed alert again (`alerts resend`); False if it is unknown.

    Its attempt count and its alerts.max_age start over; the earlier attempts stay in its
    delivery history.
    """
    changed = session.execute(
        update(Alert)
        .where(Alert.id == alert_id, or_(Alert.status != PENDING, Alert.next_attempt_at > now))
        .values(status=PENDING, next_attempt_at=now, last_error=None, attempts=0, queued_at=now)
    ).rowcount
    if changed:
        return True
    return session.get(Alert, alert_id) is not None


def resend(session: Session, alert_id: int, *, actor: str, now: datetime) -> None:
    """Queue an alert for delivery again and write the audit row (`alerts resend`, the
    console's Resend); NotFound when there is no such alert."""
    if not requeue(session, alert_id, now):
        raise NotFound(f"alert {alert_id} does not exist")
    record_audit(session, actor=actor, event="alerts.resend", extra={"alert_id": alert_id})
