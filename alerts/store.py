"""The alerts package's SQL: the outbox (`alert`) and its delivery attempts (`alert_delivery`).

Every status change of either goes through one compare-and-set path
(`UPDATE ... WHERE id = :id AND status = :expected`, the changed rows counted), checked
against the state machines of `alerts.states`: a transition they do not list raises
IllegalTransition and changes nothing; a row that is no longer in the expected status is
left alone (the `transition_*` functions return the rows they changed; `transition_alert`
raises TransitionConflict). Rows are written in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from alerts.states import (
    ALERT_INITIAL,
    ALERT_TRANSITIONS,
    DELIVERY_INITIAL,
    DELIVERY_TRANSITIONS,
    AlertStatus,
    DeliveryStatus,
    alert_transition_allowed,
    delivery_transition_allowed,
)
from engine.exceptions import IllegalTransition, TransitionConflict
from engine.store.db import affected_rows, upsert_insert
from engine.store.models import Alert, AlertDelivery, Job
from engine.store.scheduling import pairs_in

_ALERTS = Alert.__table__


# -- the compare-and-set path --------------------------------------------------------------


def _statuses(expected: AlertStatus | Iterable[AlertStatus]) -> list[AlertStatus]:
    if isinstance(expected, str):
        return [AlertStatus(expected)]
    return sorted(AlertStatus(status) for status in expected)


def _check_alert(expected: Sequence[AlertStatus], to: AlertStatus) -> None:
    for status in expected:
        if not alert_transition_allowed(status, to):
            allowed = ", ".join(sorted(ALERT_TRANSITIONS[to])) or "(none)"
            raise IllegalTransition(
                f"alert: {status} -> {to} is not allowed; allowed from: {allowed}"
            )


def _extra(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Other columns set with the status; never id or status."""
    values = dict(values or {})
    unknown = sorted(set(values) - (set(_ALERTS.c.keys()) - {"id", "status"}))
    if unknown:
        raise ValueError(f"alert has no settable column(s) {', '.join(unknown)}")
    return values


def _transition(
    session: Session,
    where: ColumnElement[bool],
    *,
    expected: AlertStatus | Iterable[AlertStatus],
    to: AlertStatus,
    values: Mapping[str, Any] | None = None,
    returning: Sequence[Any] = (Alert.id,),
) -> list[Any]:
    statuses = _statuses(expected)
    to = AlertStatus(to)
    _check_alert(statuses, to)
    statement = (
        update(Alert)
        .where(where, Alert.status.in_([status.value for status in statuses]))
        .values(status=to.value, **_extra(values))
        .returning(*returning)
    )
    return list(session.execute(statement).all())


def transition_alerts(
    session: Session,
    alert_ids: Sequence[int],
    *,
    expected: AlertStatus | Iterable[AlertStatus],
    to: AlertStatus,
    values: Mapping[str, Any] | None = None,
) -> list[int]:
    """Move the listed rows that are in `expected` to `to` (setting `values` too); returns
    the ids changed. Rows in another status (changed meanwhile) are left alone."""
    if not alert_ids:
        _check_alert(_statuses(expected), AlertStatus(to))
        return []
    where = Alert.id.in_(list(dict.fromkeys(alert_ids)))
    rows = _transition(session, where, expected=expected, to=to, values=values)
    return [row.id for row in rows]


def transition_alert(
    session: Session,
    alert_id: int,
    *,
    expected: AlertStatus,
    to: AlertStatus,
    values: Mapping[str, Any] | None = None,
) -> None:
    """Move one row from `expected` to `to`, or raise TransitionConflict (nothing changed)."""
    if transition_alerts(session, [alert_id], expected=expected, to=to, values=values):
        return
    actual = status_of(session, alert_id)
    if actual is None:
        raise TransitionConflict(f"alert {alert_id} does not exist; cannot move it to {to}")
    raise TransitionConflict(
        f"alert {alert_id} is {actual}, not {expected} (it changed meanwhile); not moved to {to}"
    )


def transition_delivery(
    session: Session,
    alert_id: int,
    attempt: int | None,
    *,
    expected: DeliveryStatus,
    to: DeliveryStatus,
    values: Mapping[str, Any] | None = None,
) -> int:
    """Move the alert's attempts in `expected` (attempt number `attempt`, or all of them) to
    `to`; returns how many changed."""
    expected, to = DeliveryStatus(expected), DeliveryStatus(to)
    if not delivery_transition_allowed(expected, to):
        allowed = ", ".join(sorted(DELIVERY_TRANSITIONS[to])) or "(none)"
        raise IllegalTransition(
            f"alert delivery: {expected} -> {to} is not allowed; allowed from: {allowed}"
        )
    statement = update(AlertDelivery).where(
        AlertDelivery.alert_id == alert_id, AlertDelivery.status == expected.value
    )
    if attempt is not None:
        statement = statement.where(AlertDelivery.attempt == attempt)
    return affected_rows(session.execute(statement.values(status=to.value, **dict(values or {}))))


# -- writing rows --------------------------------------------------------------------------


def insert_alerts(session: Session, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert outbox rows, skipping fingerprints already there; returns the new rows' ids."""
    for row in rows:
        if AlertStatus(row["status"]) not in ALERT_INITIAL:
            raise IllegalTransition(f"alert: a new row cannot be {row['status']}")
    if not rows:
        return []
    statement = (
        upsert_insert(session, Alert)
        .values(list(rows))
        .on_conflict_do_nothing(index_elements=["fingerprint"])
        .returning(Alert.id)
    )
    return list(session.scalars(statement))


def insert_delivery(
    session: Session,
    alert_id: int,
    *,
    attempt: int,
    at: datetime,
    status: DeliveryStatus,
    latency: float,
    error: str | None = None,
) -> None:
    """Record one delivery attempt (started, or its outcome when it never started)."""
    if DeliveryStatus(status) not in DELIVERY_INITIAL:
        raise IllegalTransition(f"alert delivery: a new attempt cannot be {status}")
    session.execute(
        insert(AlertDelivery).values(
            alert_id=alert_id,
            attempt=attempt,
            at=at,
            status=DeliveryStatus(status).value,
            latency=latency,
            error=error,
        )
    )


def set_alert(session: Session, alert_id: int, **values: Any) -> None:
    """Set columns of a row other than its status (count, claimed_by, attempts...)."""
    session.execute(update(Alert).where(Alert.id == alert_id).values(**_extra(values)))


def note_late_answer(session: Session, alert_id: int, *, attempt: int, note: str) -> None:
    """Append `note` to the error of the alert's last attempt, if it is `attempt` and timed out."""
    last = select(func.max(AlertDelivery.id)).where(AlertDelivery.alert_id == alert_id)
    session.execute(
        update(AlertDelivery)
        .where(AlertDelivery.id == last.scalar_subquery(), AlertDelivery.attempt == attempt)
        .where(AlertDelivery.status == DeliveryStatus.TIMEOUT.value)
        .values(error=func.coalesce(AlertDelivery.error, "") + f"; {note}")
    )


# -- the dispatcher's compare-and-set moves ------------------------------------------------


def claim(session: Session, alert_id: int, *, at: datetime, lease_until: datetime) -> bool:
    """Lease a pending row due at `at` until `lease_until`; False if another dispatcher (or
    anything else) changed it first."""
    where = and_(Alert.id == alert_id, Alert.next_attempt_at <= at)
    values = {"next_attempt_at": lease_until}
    pending = AlertStatus.PENDING
    return bool(_transition(session, where, expected=pending, to=pending, values=values))


def fold_group(session: Session, alert: Alert, *, at: datetime, reason: str) -> list[Any]:
    """Suppress the other due pending rows of `alert`'s group; returns them (id, count,
    event, route). A row another dispatcher leased meanwhile is not due, so it is left."""
    where = and_(
        Alert.group_key == alert.group_key, Alert.id != alert.id, Alert.next_attempt_at <= at
    )
    return _transition(
        session,
        where,
        expected=AlertStatus.PENDING,
        to=AlertStatus.SUPPRESSED,
        values={"last_error": reason, "next_attempt_at": None},
        returning=(Alert.id, Alert.count, Alert.event, Alert.route),
    )


def attach_to_incident(session: Session, alert_id: int, incident_id: int) -> bool:
    """Suppress a pending row into an incident (its pages tell it); False if it was taken."""
    where = and_(Alert.id == alert_id, Alert.incident_id.is_(None))
    values = {
        "incident_id": incident_id,
        "last_error": f"grouped into incident #{incident_id}",
        "next_attempt_at": None,
    }
    return bool(
        _transition(
            session, where, expected=AlertStatus.PENDING, to=AlertStatus.SUPPRESSED, values=values
        )
    )


def settle_sent(session: Session, alert_id: int, *, attempt: int, now: datetime) -> bool:
    """A timed-out attempt went through after all: the row is sent, if it still waits for
    its next attempt after that one (nobody delivered or claimed it since)."""
    where = and_(Alert.id == alert_id, Alert.attempts == attempt)
    values = {"sent_at": now, "next_attempt_at": None, "last_error": None}
    return bool(
        _transition(
            session, where, expected=AlertStatus.PENDING, to=AlertStatus.SENT, values=values
        )
    )


def requeue(session: Session, alert_id: int, now: datetime) -> bool:
    """Make a row pending and due now, its attempts starting over: from sent, failed or
    suppressed, or pending with its next attempt later; False if nothing changed."""
    values = {"next_attempt_at": now, "last_error": None, "attempts": 0, "queued_at": now}
    pending = AlertStatus.PENDING
    done = _transition(
        session,
        Alert.id == alert_id,
        expected=set(AlertStatus) - {pending},
        to=pending,
        values=values,
    )
    if not done:
        later = and_(Alert.id == alert_id, Alert.next_attempt_at > now)
        done = _transition(session, later, expected=pending, to=pending, values=values)
    return bool(done)


def held_on_host(session: Session, host: str, now: datetime, limit: int) -> list[Any]:
    """(id, claimed_by) of the pending rows leased by a dispatcher of `host`."""
    return list(
        session.execute(
            select(Alert.id, Alert.claimed_by)
            .where(Alert.status == AlertStatus.PENDING.value, Alert.next_attempt_at > now)
            .where(Alert.claimed_by.like(f"{host}:%"))
            .order_by(Alert.next_attempt_at)
            .limit(limit)
        ).all()
    )


def release(session: Session, alert_ids: Sequence[int], now: datetime) -> list[int]:
    """End the lease of these pending rows: due now, held by nobody."""
    pending = AlertStatus.PENDING
    values = {"next_attempt_at": now, "claimed_by": None}
    return transition_alerts(session, alert_ids, expected=pending, to=pending, values=values)


# -- reading -------------------------------------------------------------------------------


def status_of(session: Session, alert_id: int) -> AlertStatus | None:
    """The row's status; None if there is no such row."""
    status = session.scalar(select(Alert.status).where(Alert.id == alert_id))
    return None if status is None else AlertStatus(status)


def possible_duplicate(session: Session, alert_id: int) -> bool:
    """Whether a delivery of the row was interrupted (its channel may have it twice)."""
    return bool(session.scalar(select(Alert.possible_duplicate).where(Alert.id == alert_id)))


def due(session: Session, now: datetime, limit: int = 100, busy: Sequence[str] = ()) -> list[Alert]:
    """Pending rows whose next attempt is due, oldest first, except those of `busy` channels."""
    statement = select(Alert).where(
        Alert.status == AlertStatus.PENDING.value, Alert.next_attempt_at <= now
    )
    if busy:
        statement = statement.where(or_(Alert.channel.is_(None), Alert.channel.notin_(busy)))
    statement = statement.order_by(Alert.next_attempt_at, Alert.id).limit(limit)
    return list(session.scalars(statement))


def pending_by_fingerprint(session: Session, fingerprints: Sequence[str]) -> list[Alert]:
    """The pending rows of these fingerprints (a lookup on the unique index)."""
    statement = select(Alert).where(
        Alert.fingerprint.in_(list(fingerprints)), Alert.status == AlertStatus.PENDING.value
    )
    return list(session.scalars(statement))


def last_sent_in_group(session: Session, group_key: str) -> Alert | None:
    """The most recent delivered alert of a group (for the group window)."""
    statement = (
        select(Alert)
        .where(Alert.group_key == group_key, Alert.status == AlertStatus.SENT.value)
        .order_by(Alert.sent_at.desc())
        .limit(1)
    )
    return session.scalars(statement).first()


def sent_count(
    session: Session, route: str, since: datetime, *, except_events: Iterable[str] = ()
) -> int:
    """Alerts of `route` delivered since `since`, those of `except_events` left out."""
    statement = select(func.count(Alert.id)).where(
        Alert.route == route,
        Alert.sent_at >= since,
        Alert.status == AlertStatus.SENT.value,
        Alert.event.notin_(list(except_events)),
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
    """Alerts, newest first (for `alerts list`)."""
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


def pending_members(
    session: Session, routes: Sequence[str], now: datetime, skip_events: Iterable[str], limit: int
) -> list[Alert]:
    """Due pending DAG alerts of these routes not in an incident yet, oldest first."""
    return list(session.scalars(_pending_members(routes, now, skip_events).limit(limit)))


def any_pending_member(
    session: Session, routes: Sequence[str], now: datetime, skip_events: Iterable[str]
) -> bool:
    """Whether `pending_members` would find one (an indexed lookup)."""
    statement = _pending_members(routes, now, skip_events).with_only_columns(Alert.id).limit(1)
    return session.scalar(statement) is not None


def _pending_members(routes: Sequence[str], now: datetime, skip_events: Iterable[str]) -> Any:
    return (
        select(Alert)
        .where(Alert.status == AlertStatus.PENDING.value, Alert.next_attempt_at <= now)
        .where(Alert.route.in_(list(routes)), Alert.dag_id.is_not(None))
        .where(Alert.incident_id.is_(None), Alert.event.notin_(list(skip_events)))
        .order_by(Alert.id)
    )


def incident_events(session: Session, incident_id: int) -> dict[str, int]:
    """How many alerts of each event an incident holds."""
    statement = (
        select(Alert.event, func.count(Alert.id))
        .where(Alert.incident_id == incident_id)
        .group_by(Alert.event)
    )
    return {event: count for event, count in session.execute(statement).all()}


def incident_alerts(session: Session, incident_id: int, *, tasks: bool, limit: int) -> list[Alert]:
    """An incident's first `limit` task alerts (`tasks`), or run-level alerts."""
    kind = Alert.task_id.is_not(None) if tasks else Alert.task_id.is_(None)
    statement = select(Alert).where(Alert.incident_id == incident_id, kind)
    return list(session.scalars(statement.order_by(Alert.id).limit(limit)))


def incident_task_count(session: Session, incident_id: int) -> int:
    """How many task alerts an incident holds."""
    statement = select(func.count(Alert.id)).where(
        Alert.incident_id == incident_id, Alert.task_id.is_not(None)
    )
    return int(session.scalar(statement) or 0)


def latest_per_dag(session: Session, incident_id: int) -> list[Any]:
    """(dag_id, run_id, created_at) of the last alert of each DAG in an incident."""
    latest = select(func.max(Alert.id)).where(Alert.incident_id == incident_id)
    latest = latest.group_by(Alert.dag_id)
    statement = select(Alert.dag_id, Alert.run_id, Alert.created_at).where(Alert.id.in_(latest))
    return list(session.execute(statement).all())


def task_alerts(
    session: Session, pairs: Iterable[tuple[str, str]], events: Iterable[str]
) -> list[Any]:
    """(id, route, dag_id, task_id, event) of the alerts of these events about these
    (dag_id, task_id) pairs, suppressed ones left out, oldest first."""
    statement = (
        select(Alert.id, Alert.route, Alert.dag_id, Alert.task_id, Alert.event)
        .where(
            pairs_in(Alert.dag_id, Alert.task_id, pairs),
            Alert.event.in_(list(events)),
            Alert.status != AlertStatus.SUPPRESSED.value,
        )
        .order_by(Alert.id)
    )
    return list(session.execute(statement).all())


def silent_schedulers(
    session: Session, now: datetime, timeout: timedelta, recently_failed: float
) -> list[Job]:
    """Scheduler jobs whose heartbeat is older than `timeout`: still said running, or marked
    failed within `recently_failed` seconds of their timeout (by a scheduler that noticed)."""
    statement = select(Job).where(
        Job.job_type == "scheduler",
        (Job.state == "running")
        | (
            (Job.state == "failed")
            & (Job.end_date >= now - timeout - timedelta(seconds=recently_failed))
        ),
        Job.latest_heartbeat < now - timeout,
    )
    return list(session.scalars(statement))
