"""Incidents: a route's DAG alerts grouped by its `group_by` values, paged as one.

An alert of a grouped route (`group_by`, by default one DAG run) is not delivered on its
own: the dispatcher (never the scheduler's tick) attaches it to the open incident of its
group, or opens one. The incident's first page is due `group_wait` seconds after its first
alert (a storm of failures lands in one message); alerts that join later are told in an
update, at most every `group_interval`. Each page is an ordinary outbox row (retried,
timed out and recorded like any alert) carrying the incident's key, which the channel
gets as its dedup key (PagerDuty `dedup_key`, Opsgenie `alias`, a webhook's
`Idempotency-Key`): a page sent twice folds into one incident on the receiving side.

An incident resolves when its work succeeds again: for each DAG in it, a run of that DAG
(its own run, or a later one) succeeds after the incident's last alert of that DAG. Then a
route with `send_resolved` gets an `incident_resolved` page, and the group's next alert
opens a new incident (a new key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alerts import outbox
from alerts import store as alert_store
from alerts.events import (
    SEVERITIES,
    SYSTEM_EVENTS,
    Event,
    fingerprint,
)
from alerts.routes import Route, run_link
from alerts.states import AlertStatus
from engine.store.db import upsert_insert
from engine.store.models import Alert, AlertIncident, DagRun

if TYPE_CHECKING:
    from engine.config import Config

OPEN = "open"
RESOLVED = "resolved"
#: The events of an incident's own pages.
PAGE_EVENTS = frozenset({Event.INCIDENT.value, Event.INCIDENT_RESOLVED.value})
#: Tasks a page lists; the rest are counted ("and 5 more tasks").
MAX_LISTED = 20
#: Run-level alerts (run failed, deadline missed...) a page lists.
MAX_RUN_LINES = 10
#: Seconds between two looks for incidents whose work succeeded again.
RESOLVE_INTERVAL = 5.0
#: Open incidents one look checks; the next look goes on from there.
RESOLVE_BATCH = 50
#: Rows one grouping pass attaches.
BATCH = 200
#: Seconds a due update waits while the incident's previous page is still undelivered.
BUSY_RETRY = 1.0
_ERROR_LEN = 160


def is_member(route: Route | None, event: str, dag_id: str | None) -> bool:
    """Whether an alert of `route` joins an incident instead of being delivered alone."""
    if route is None or not route.grouped or dag_id is None or event in PAGE_EVENTS:
        return False
    return event not in {e.value for e in SYSTEM_EVENTS}


def group_of(route: Route, alert: Alert) -> dict[str, str | None]:
    """The alert's values of the route's group_by fields."""
    return {field: getattr(alert, field) for field in route.grouping.group_by}


def _group_key(route: Route, group: Mapping[str, str | None]) -> str:
    text = "|".join([route.name, *(f"{k}={v or ''}" for k, v in group.items())])
    if len(text) <= 1000:
        return text
    return text[:900] + "#" + hashlib.sha256(text.encode()).hexdigest()


def _incident_key(group_key: str, opened_at: datetime) -> str:
    digest = hashlib.sha256(f"{group_key}|{opened_at.isoformat()}".encode()).hexdigest()
    return f"dagwatch-incident-{digest[:32]}"


# -- grouping ------------------------------------------------------------------------------


def _grouped(routes: Mapping[str, Route]) -> list[str]:
    return [name for name, route in routes.items() if route.grouped]


#: Events never grouped into an incident: the pages themselves and system events.
_UNGROUPED = frozenset({*PAGE_EVENTS, *(e.value for e in SYSTEM_EVENTS)})


def work_due(session: Session, routes: Mapping[str, Route], now: datetime) -> bool:
    """Whether an alert waits to be grouped or a page is due (two indexed lookups)."""
    if not any(route.grouped for route in routes.values()):
        return False
    if alert_store.any_pending_member(session, _grouped(routes), now, _UNGROUPED):
        return True
    page = select(AlertIncident.id).where(AlertIncident.next_page_at <= now).limit(1)
    return session.scalar(page) is not None


def next_page_at(session: Session) -> datetime | None:
    """When the next incident page is due, if one is."""
    return session.scalar(select(func.min(AlertIncident.next_page_at)))


def group_pending(session: Session, routes: Mapping[str, Route], now: datetime) -> int:
    """Attach the pending alerts of grouped routes to their incidents; returns how many."""
    if not any(route.grouped for route in routes.values()):
        return 0
    alerts = alert_store.pending_members(session, _grouped(routes), now, _UNGROUPED, BATCH)
    return sum(attach(session, routes[alert.route or ""], alert, now) for alert in alerts)


def attach(session: Session, route: Route, alert: Alert, now: datetime) -> bool:
    """Put one pending alert into its open incident (opened if none); False if another
    dispatcher took the alert first. Its first page is due group_wait after its first alert."""
    group = group_of(route, alert)
    incident = _open_incident(session, route, group, alert.created_at)
    if not alert_store.attach_to_incident(session, alert.id, incident.id):
        return False
    grouping = route.grouping
    if incident.pages == 0:
        due = incident.opened_at + timedelta(seconds=grouping.group_wait)
    else:
        due = (incident.last_page_at or now) + timedelta(seconds=grouping.group_interval)
    incident.alerts += 1
    incident.last_alert_at = max(incident.last_alert_at, alert.created_at)
    if incident.next_page_at is None:
        incident.next_page_at = due
    session.flush()
    return True


def _open_incident(
    session: Session, route: Route, group: Mapping[str, str | None], at: datetime
) -> AlertIncident:
    key = _group_key(route, group)
    found = session.scalars(select(AlertIncident).where(AlertIncident.open_key == key)).first()
    if found is not None:
        return found
    session.execute(
        upsert_insert(session, AlertIncident)
        .values(
            route=route.name,
            group_key=key,
            open_key=key,
            key=_incident_key(key, at),
            group=dict(group),
            dag_id=group.get("dag_id"),
            run_id=group.get("run_id"),
            status=OPEN,
            opened_at=at,
            last_alert_at=at,
            alerts=0,
            paged_alerts=0,
            pages=0,
        )
        .on_conflict_do_nothing(index_elements=["open_key"])
    )
    return session.scalars(select(AlertIncident).where(AlertIncident.open_key == key)).one()


# -- paging --------------------------------------------------------------------------------


def page_due(
    session: Session, routes: Mapping[str, Route], config: Config, now: datetime
) -> datetime | None:
    """Write the page of each incident whose next page is due; returns when the next one is.

    A page tells every alert of the incident so far; it is an outbox row like any other.
    While an incident's previous page is still undelivered (its channel failing), its update
    waits for it.
    """
    statement = (
        select(AlertIncident)
        .where(AlertIncident.next_page_at <= now)
        .order_by(AlertIncident.next_page_at)
        .limit(BATCH)
    )
    for incident in list(session.scalars(statement)):
        route = routes.get(incident.route)
        if route is None:  # the route is gone from the configuration: nothing to page
            incident.next_page_at = None
            continue
        if incident.last_page_id is not None and _undelivered(session, incident.last_page_id):
            incident.next_page_at = now + timedelta(seconds=BUSY_RETRY)
            continue
        kind = "firing" if incident.pages == 0 else "update"
        _write_page(session, route, incident, config, now, kind)
        if incident.status == RESOLVED and route.grouping.send_resolved:
            _write_page(session, route, incident, config, now, RESOLVED)
    session.flush()
    return next_page_at(session)


def _undelivered(session: Session, alert_id: int) -> bool:
    return alert_store.status_of(session, alert_id) == AlertStatus.PENDING


def _write_page(
    session: Session,
    route: Route,
    incident: AlertIncident,
    config: Config,
    now: datetime,
    kind: str,
) -> None:
    payload = page_payload(session, route, incident, config, kind)
    event = Event.INCIDENT_RESOLVED if kind == RESOLVED else Event.INCIDENT
    page = incident.pages + 1
    row = outbox.NewAlert(
        event=event.value,
        route=route.name,
        fingerprint=fingerprint(
            event.value,
            route.name,
            dag_id=incident.dag_id,
            run_id=incident.run_id,
            extra=f"{incident.key}#{page}",
        ),
        severity="info" if kind == RESOLVED else payload["severity"],
        dag_id=incident.dag_id,
        run_id=incident.run_id,
        payload=payload | {"page": page},
    )
    ids = outbox.enqueue(session, [row], now)
    incident.pages = page
    incident.paged_alerts = incident.alerts
    incident.last_page_at = now
    incident.next_page_at = None
    if ids:
        incident.last_page_id = ids[0]


def _severity(route: Route, events: Mapping[str, int]) -> str:
    """The worst severity among the incident's alerts (the route's own, if it sets one)."""
    known = {event.value: event for event in Event}
    levels = [route.severity_of(known[name]) for name in events if name in known]
    return max(levels, key=SEVERITIES.index, default=route.severity or "error")


def page_payload(
    session: Session, route: Route, incident: AlertIncident, config: Config, kind: str
) -> dict[str, Any]:
    """What a page tells: the incident, its alerts by event, its tasks (at most
    MAX_LISTED) and its run-level alerts; the message is rendered from this."""
    events = alert_store.incident_events(session, incident.id)
    task_count = alert_store.incident_task_count(session, incident.id)
    tasks = alert_store.incident_alerts(session, incident.id, tasks=True, limit=MAX_LISTED)
    runs = alert_store.incident_alerts(session, incident.id, tasks=False, limit=MAX_RUN_LINES)
    spans_runs = "run_id" not in incident.group
    return {
        "incident_id": incident.id,
        "incident_key": incident.key,
        "kind": kind,
        "status": incident.status,
        "group": dict(incident.group),
        "dag_id": incident.dag_id,
        "run_id": incident.run_id,
        "opened_at": incident.opened_at.isoformat(),
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
        "alerts": incident.alerts,
        "new_alerts": incident.alerts - incident.paged_alerts,
        "events": events,
        "severity": _severity(route, events),
        "tasks": [_line(alert, config, link=spans_runs) for alert in tasks],
        "more_tasks": max(0, task_count - MAX_LISTED),
        "run_alerts": [_line(alert, config, link=spans_runs) for alert in runs],
        "link": run_link(config, incident.dag_id, incident.run_id),
    }


def _line(alert: Alert, config: Config, *, link: bool) -> dict[str, Any]:
    payload = alert.payload or {}
    error = str(payload.get("exception") or payload.get("message") or "").strip()
    error = error.splitlines()[-1] if error else ""
    line = {
        "event": alert.event,
        "dag_id": alert.dag_id,
        "run_id": alert.run_id,
        "task_id": alert.task_id,
        "attempt": payload.get("attempt"),
        "max_attempts": payload.get("max_attempts"),
        "error": error[:_ERROR_LEN] + ("…" if len(error) > _ERROR_LEN else ""),
        "at": alert.created_at.isoformat(),
    }
    if link:
        line["link"] = run_link(config, alert.dag_id, alert.run_id)
    return line


# -- the message ---------------------------------------------------------------------------

_PHRASES = {
    "task_failed": ("task failed", "tasks failed"),
    "task_retry": ("retry", "retries"),
    "sla_missed": ("SLA/deadline missed", "SLAs/deadlines missed"),
    "deadline_at_risk": ("deadline at risk", "deadlines at risk"),
    "zombie_killed": ("zombie attempt", "zombie attempts"),
    "dag_run_failed": ("run failed", "runs failed"),
    "run_not_started": ("run did not start", "runs did not start"),
    "task_succeeded": ("task succeeded", "tasks succeeded"),
    "dag_run_succeeded": ("run succeeded", "runs succeeded"),
}


def headline(events: Mapping[str, int]) -> str:
    """ "20 tasks failed, run failed": the incident's alerts by event, worst first."""
    order = list(_PHRASES)
    parts = []
    for event in sorted(events, key=lambda e: order.index(e) if e in order else len(order)):
        count = int(events[event])
        one, many = _PHRASES.get(event, (event, event))
        if event in ("dag_run_failed", "run_not_started") and count == 1:
            parts.append(one)
        else:
            parts.append(f"{count} {one if count == 1 else many}")
    return ", ".join(parts)


def _scope(payload: Mapping[str, Any]) -> str:
    group = payload.get("group") or {}
    values = [str(v) for v in group.values() if v]
    return " ".join(values) or "dagwatch"


def _describe(line: Mapping[str, Any]) -> str:
    subject = line.get("task_id") or "run"
    where = f"{line['dag_id']} {line['run_id']} " if line.get("link") else ""
    detail = line["event"]
    if line.get("attempt"):
        total = f" of {line['max_attempts']}" if line.get("max_attempts") else ""
        detail += f", attempt {line['attempt']}{total}"
    text = f"- {where}{subject} ({detail})"
    if line.get("error"):
        text += f": {line['error']}"
    if line.get("link"):
        text += f"\n  {line['link']}"
    return text


def default_message(payload: Mapping[str, Any]) -> tuple[str, str]:
    """The (title, body) of a page when its route has no templates."""
    scope, summary = _scope(payload), headline(payload.get("events") or {})
    if payload.get("kind") == RESOLVED:
        title = f"Resolved: {scope}"
        lines = [f"The work succeeded again ({payload.get('resolved_at')}). It had: {summary}."]
    else:
        prefix = "Update: " if payload.get("kind") == "update" else ""
        title = f"{prefix}{scope}: {summary}"
        new = payload.get("new_alerts") or 0
        lines = [
            f"{payload.get('alerts')} alert(s) since {payload.get('opened_at')}"
            + (f", {new} new" if payload.get("kind") == "update" else "")
        ]
        if payload.get("status") == RESOLVED:
            lines.append(f"Resolved since: the work succeeded again ({payload['resolved_at']}).")
    if payload.get("run_alerts"):
        lines += ["", "Run:", *map(_describe, payload["run_alerts"])]
    if payload.get("tasks"):
        lines += ["", "Tasks:", *map(_describe, payload["tasks"])]
        if payload.get("more_tasks"):
            lines.append(f"… and {payload['more_tasks']} more task alert(s)")
    if payload.get("link"):
        lines += ["", f"Console: {payload['link']}"]
    lines.append(f"Incident key: {payload.get('incident_key')}")
    return title, "\n".join(lines)


# -- resolving -----------------------------------------------------------------------------


@dataclass
class Resolver:
    """Looks, every RESOLVE_INTERVAL, for open incidents whose work succeeded again."""

    cursor: int = 0
    last: datetime | None = None

    def due(self, now: datetime) -> bool:
        return self.last is None or (now - self.last).total_seconds() >= RESOLVE_INTERVAL

    def find(self, session: Session, now: datetime) -> list[int]:
        """The open incidents of one batch whose work succeeded again (reads only)."""
        self.last = now
        statement = (
            select(AlertIncident)
            .where(AlertIncident.status == OPEN, AlertIncident.id > self.cursor)
            .order_by(AlertIncident.id)
            .limit(RESOLVE_BATCH)
        )
        batch = list(session.scalars(statement))
        self.cursor = batch[-1].id if len(batch) == RESOLVE_BATCH else 0
        return [item.id for item in batch if item.alerts and _succeeded_again(session, item)]


def resolve_all(
    session: Session, ids: list[int], routes: Mapping[str, Route], config: Config, now: datetime
) -> int:
    """Resolve these incidents (those still open); returns how many."""
    if not ids:
        return 0
    statement = select(AlertIncident).where(AlertIncident.id.in_(ids), AlertIncident.status == OPEN)
    found = list(session.scalars(statement))
    for incident in found:
        resolve(session, routes.get(incident.route), incident, config, now)
    return len(found)


def _succeeded_again(session: Session, incident: AlertIncident) -> bool:
    """Whether every DAG of the incident had a run succeed after the incident's last alert
    of it, that run being the alert's own run or a later one (by logical date)."""
    rows = alert_store.latest_per_dag(session, incident.id)
    for dag_id, run_id, at in rows:
        since = session.scalar(
            select(DagRun.logical_date).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
        )
        success = select(DagRun.id).where(
            DagRun.dag_id == dag_id, DagRun.state == "success", DagRun.end_date > at
        )
        if since is not None:
            success = success.where(DagRun.logical_date >= since)
        if session.scalar(success.limit(1)) is None:
            return False
    return bool(rows)


def resolve(
    session: Session, route: Route | None, incident: AlertIncident, config: Config, now: datetime
) -> None:
    """Close the incident (its group's next alert opens a new one); page it resolved if its
    route asks and it was paged (else its first page, still due, says it is resolved)."""
    incident.status = RESOLVED
    incident.open_key = None
    incident.resolved_at = now
    if route is None or incident.pages == 0:
        session.flush()
        return
    incident.next_page_at = None  # the resolved page tells the final count
    if route.grouping.send_resolved:
        _write_page(session, route, incident, config, now, RESOLVED)
    session.flush()


# -- listing -----------------------------------------------------------------------------


def listing(
    session: Session, *, status: str | None = None, limit: int = 100
) -> list[AlertIncident]:
    """Incidents, newest first (for `alerts incidents`)."""
    statement = select(AlertIncident).order_by(AlertIncident.id.desc()).limit(limit)
    if status:
        statement = statement.where(AlertIncident.status == status)
    return list(session.scalars(statement))
