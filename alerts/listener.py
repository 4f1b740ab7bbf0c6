"""Alerts born from state changes, written in the same transaction as the change.

`TransitionAlerts` is a transition listener: a task that fails for good, retries,
succeeds (or recovers), a run that ends, an attempt failed as a zombie, each becomes
outbox rows for the routes that want it, or nothing at all when no route does (the
common case costs one set lookup per event). `ImportErrorAlerts` is a tick hook that
turns new DAG import errors into alerts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts import outbox
from alerts import store as alert_store
from alerts.events import Event
from alerts.routes import Route, compose, dag_details, run_link, wanted_events
from engine.hooks import TickContext
from engine.store.models import ImportError_, SlaMiss, TaskInstance
from engine.store.scheduling import pairs_in
from engine.store.transitions import TASK_INSTANCE, TransitionEvent

if TYPE_CHECKING:
    from engine.config import Config

log = logging.getLogger(__name__)

ZOMBIE_PREFIX = "zombie"
_TASK_EVENTS = {
    "failed": Event.TASK_FAILED,
    "up_for_retry": Event.TASK_RETRY,
    "success": Event.TASK_SUCCEEDED,
}
_RUN_EVENTS = {"failed": Event.DAG_RUN_FAILED, "success": Event.DAG_RUN_SUCCEEDED}
_FAILURES = frozenset({Event.TASK_FAILED, Event.DAG_RUN_FAILED})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


class TransitionAlerts:
    """A transition listener writing outbox rows for the routes that want each event."""

    def __init__(self, routes: Mapping[str, Route], config: Config) -> None:
        self.routes = dict(routes)
        self.config = config
        self.wanted = wanted_events(self.routes)
        self.needs_details = any(route.needs_dag_details for route in self.routes.values())
        # task_resolved: routes that page alert by alert (group_by = []); the others resolve
        # their incidents (alerts.incidents)
        self._resolved_routes = {
            name: route
            for name, route in self.routes.items()
            if Event.TASK_FAILED in route.events
            and route.grouping.send_resolved
            and not route.grouped
        }
        self.send_resolved = bool(self._resolved_routes)

    def _events_of(self, change: TransitionEvent) -> list[Event]:
        table = _TASK_EVENTS if change.entity == TASK_INSTANCE else _RUN_EVENTS
        event = table.get(change.to_state)
        if event is None:
            return []
        found = [event] if event in self.wanted else []
        zombie = (change.reason or "").startswith(ZOMBIE_PREFIX)
        if zombie and change.entity == TASK_INSTANCE and Event.ZOMBIE_KILLED in self.wanted:
            found.append(Event.ZOMBIE_KILLED)
        return found

    def wants(self, entity: str, to_state: str, reason: str | None) -> bool:
        """Whether a transition to `to_state` can make an alert (else the engine neither
        calls this listener nor guards the transition with a savepoint for it)."""
        change = TransitionEvent(entity, "", "", None, None, None, "", to_state, _EPOCH, reason)
        if self._events_of(change):
            return True
        return self.send_resolved and entity == TASK_INSTANCE and to_state == "success"

    def __call__(self, session: Session, changes: list[TransitionEvent]) -> None:
        if not self.wanted and not self.send_resolved:
            return
        picked = [(change, events) for change in changes if (events := self._events_of(change))]
        resolving = (
            [c for c in changes if c.entity == TASK_INSTANCE and c.to_state == "success"]
            if self.send_resolved
            else []
        )
        if not picked and not resolving:
            return
        now = changes[0].at
        rows: list[outbox.NewAlert] = []
        if picked:
            rows += self._alerts(session, picked)
        if resolving:
            rows += self._resolved(session, resolving)
        outbox.enqueue(session, rows, now)

    def _alerts(
        self, session: Session, picked: list[tuple[TransitionEvent, list[Event]]]
    ) -> list[outbox.NewAlert]:
        dag_ids = {change.dag_id for change, _ in picked}
        details = dag_details(session, dag_ids) if self.needs_details else {}
        ti_ids = [c.entity_id for c, _ in picked if c.entity == TASK_INSTANCE and c.entity_id]
        timing = _task_timing(session, ti_ids)
        failed_runs = {(c.dag_id, c.run_id) for c, events in picked if _FAILURES & set(events)}
        misses = _misses_of_runs(session, failed_runs)
        rows: list[outbox.NewAlert] = []
        for change, events in picked:
            found = timing.get(change.entity_id) if change.entity_id is not None else None
            payload = self._payload(change, found, misses)
            for event in events:
                rows += compose(
                    self.routes,
                    event,
                    payload=payload,
                    dag_id=change.dag_id,
                    run_id=change.run_id,
                    task_id=change.task_id,
                    attempt=change.try_number if change.entity == TASK_INSTANCE else None,
                    details=details.get(change.dag_id, ((), None)),
                )
        return rows

    def _payload(
        self,
        change: TransitionEvent,
        timing: tuple[Any, Any, float | None, int] | None,
        misses: Mapping[tuple[str, str], list[dict[str, Any]]],
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "dag_id": change.dag_id,
            "run_id": change.run_id,
            "task_id": change.task_id,
            "state": change.to_state,
            "at": _iso(change.at),
            "exception": change.reason,
            "link": run_link(self.config, change.dag_id, change.run_id),
        }
        if change.entity == TASK_INSTANCE:
            payload["attempt"] = change.try_number
            if timing is not None:
                start, end, duration, max_tries = timing
                payload["max_attempts"] = max_tries + 1
                payload["start_date"] = _iso(start)
                if duration is None and start is not None and end is not None:
                    duration = (end - start).total_seconds()
                payload["duration"] = duration
        run_misses = misses.get((change.dag_id, change.run_id), [])
        if change.to_state == "failed" and run_misses:
            payload["deadline_missed"] = True
            payload["misses"] = run_misses
        return payload

    def _resolved(
        self, session: Session, successes: Sequence[TransitionEvent]
    ) -> list[outbox.NewAlert]:
        """task_resolved for each route whose last alert about the task was a failure."""
        pairs = {(c.dag_id, c.task_id) for c in successes if c.task_id is not None}
        events = [Event.TASK_FAILED.value, Event.TASK_RESOLVED.value]
        latest: dict[tuple[str, str, str], tuple[int, str]] = {}
        for alert_id, route, dag_id, task_id, event in alert_store.task_alerts(
            session, pairs, events
        ):
            latest[(route, dag_id, task_id)] = (alert_id, event)
        by_pair = {(c.dag_id, c.task_id): c for c in successes}
        rows: list[outbox.NewAlert] = []
        for (route, dag_id, task_id), (alert_id, event) in latest.items():
            change = by_pair.get((dag_id, task_id))
            if event != Event.TASK_FAILED.value or change is None:
                continue
            target = self._resolved_routes.get(route)
            if target is None:
                continue
            payload = self._payload(change, None, {}) | {"resolves": alert_id}
            rows += compose(
                {route: _resolving(target)},
                Event.TASK_RESOLVED,
                payload=payload,
                dag_id=dag_id,
                run_id=change.run_id,
                task_id=task_id,
                extra=f"after-{alert_id}",
            )
        return rows


def _resolving(route: Route) -> Route:
    """The route as it receives task_resolved (any route that received the failure does)."""
    return replace(
        route,
        events=frozenset({Event.TASK_RESOLVED}),
        dags=(),
        tags=frozenset(),
        owners=frozenset(),
    )


def _task_timing(
    session: Session, ti_ids: Sequence[int | None]
) -> dict[int, tuple[Any, Any, float | None, int]]:
    ids = [ti_id for ti_id in ti_ids if ti_id]
    if not ids:
        return {}
    statement = select(
        TaskInstance.id,
        TaskInstance.start_date,
        TaskInstance.end_date,
        TaskInstance.duration,
        TaskInstance.max_tries,
    ).where(TaskInstance.id.in_(ids))
    return {
        row.id: (row.start_date, row.end_date, row.duration, row.max_tries)
        for row in session.execute(statement)
    }


def _misses_of_runs(
    session: Session, runs: set[tuple[str, str]]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """SLA misses and deadlines already recorded for these runs (told in their failure alert)."""
    if not runs:
        return {}
    statement = select(SlaMiss).where(pairs_in(SlaMiss.dag_id, SlaMiss.run_id, runs))
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for miss in session.scalars(statement):
        found.setdefault((miss.dag_id, miss.run_id), []).append(
            {"kind": miss.kind, "task_id": miss.task_id or None, "deadline": _iso(miss.deadline)}
        )
    return found


class ImportErrorAlerts:
    """A tick hook: each new or changed DAG import error is alerted once.

    Each pass reads only file names and parse times; tracebacks are loaded for the files
    whose error is new or was re-recorded, and the fingerprint (file + traceback digest)
    keeps a restarted scheduler from telling the same error twice.
    """

    def __init__(self, routes: Mapping[str, Route], config: Config) -> None:
        self.routes = {n: r for n, r in routes.items() if Event.IMPORT_ERROR in r.events}
        self.config = config
        self._seen: dict[str, Any] = {}  # filename -> timestamp of the error last looked at

    def check(self, context: TickContext) -> None:
        if not self.routes:
            return
        with context.store.session() as session:
            found = session.execute(select(ImportError_.filename, ImportError_.timestamp))
            current = {filename: at for filename, at in found}
            changed = [name for name, at in current.items() if self._seen.get(name) != at]
            self._seen = current  # errors that went away are forgotten
            if not changed:
                return
            rows = session.execute(
                select(
                    ImportError_.filename, ImportError_.timestamp, ImportError_.stacktrace
                ).where(ImportError_.filename.in_(changed))
            )
            fresh = []
            for filename, timestamp, stacktrace in rows:
                digest = hashlib.sha256(stacktrace.encode()).hexdigest()[:16]
                last_line = stacktrace.strip().splitlines()[-1] if stacktrace.strip() else ""
                payload = {
                    "filename": filename,
                    "at": _iso(timestamp),
                    "exception": last_line,
                    "stacktrace": stacktrace[-4000:],
                }
                fresh += compose(
                    self.routes,
                    Event.IMPORT_ERROR,
                    payload=payload,
                    extra=f"{filename}#{digest}",
                )
            outbox.enqueue(session, fresh, context.now)
