"""The events dagwatch alerts on, their default severities, and alert fingerprints.

A fingerprint names one occurrence of one event for one route (event, route, dag, run,
task, attempt); the outbox keeps one row per fingerprint, so a restart, a re-parse or a
second detection of the same occurrence never pages twice.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

#: The alert table's fingerprint column holds at most this many characters.
FINGERPRINT_LEN = 500


class Event(StrEnum):
    TASK_FAILED = "task_failed"
    TASK_RETRY = "task_retry"
    TASK_SUCCEEDED = "task_succeeded"
    TASK_RESOLVED = "task_resolved"
    DAG_RUN_FAILED = "dag_run_failed"
    DAG_RUN_SUCCEEDED = "dag_run_succeeded"
    SLA_MISSED = "sla_missed"
    DEADLINE_AT_RISK = "deadline_at_risk"
    RUN_NOT_STARTED = "run_not_started"
    ZOMBIE_KILLED = "zombie_killed"
    IMPORT_ERROR = "import_error"
    SCHEDULER_UNHEALTHY = "scheduler_unhealthy"
    ALERT_DELIVERY_FAILED = "alert_delivery_failed"
    TEST = "test"
    #: a page of an incident (its first one, or an update): the alerts grouped in it
    INCIDENT = "incident"
    #: the incident's work succeeded again
    INCIDENT_RESOLVED = "incident_resolved"


#: What a route sends when it names no events: failures and misses, never retries or successes.
DEFAULT_EVENTS: frozenset[Event] = frozenset(
    {
        Event.TASK_FAILED,
        Event.DAG_RUN_FAILED,
        Event.SLA_MISSED,
        Event.DEADLINE_AT_RISK,
        Event.RUN_NOT_STARTED,
        Event.ZOMBIE_KILLED,
        Event.IMPORT_ERROR,
        Event.SCHEDULER_UNHEALTHY,
        Event.ALERT_DELIVERY_FAILED,
    }
)

#: Events about the deployment rather than one DAG: a route filtered by dags, tags or owners
#: receives them only if its `events` names them, and they never count in a rate limit.
SYSTEM_EVENTS: frozenset[Event] = frozenset(
    {Event.SCHEDULER_UNHEALTHY, Event.ALERT_DELIVERY_FAILED, Event.IMPORT_ERROR}
)
#: What dagwatch sends on its own account, never listed in a route's `events`.
_INTERNAL = frozenset({Event.TEST, Event.INCIDENT, Event.INCIDENT_RESOLVED})

SEVERITIES = ("info", "warning", "error", "critical")

DEFAULT_SEVERITY: dict[Event, str] = {
    Event.TASK_FAILED: "error",
    Event.TASK_RETRY: "warning",
    Event.TASK_SUCCEEDED: "info",
    Event.TASK_RESOLVED: "info",
    Event.DAG_RUN_FAILED: "error",
    Event.DAG_RUN_SUCCEEDED: "info",
    Event.SLA_MISSED: "error",
    Event.DEADLINE_AT_RISK: "warning",
    Event.RUN_NOT_STARTED: "error",
    Event.ZOMBIE_KILLED: "warning",
    Event.IMPORT_ERROR: "error",
    Event.SCHEDULER_UNHEALTHY: "critical",
    Event.ALERT_DELIVERY_FAILED: "critical",
    Event.TEST: "info",
    Event.INCIDENT: "error",
    Event.INCIDENT_RESOLVED: "info",
}

#: Apprise notify_type per severity (Apprise knows info, success, warning, failure).
NOTIFY_TYPE: dict[str, str] = {
    "info": "info",
    "warning": "warning",
    "error": "failure",
    "critical": "failure",
}


def parse_event(name: str) -> Event:
    """`name` as an Event, or a ValueError listing the known ones."""
    try:
        event = Event(name)
    except ValueError:
        event = None
    if event is None or event in _INTERNAL:
        known = ", ".join(sorted(e.value for e in Event if e not in _INTERNAL))
        raise ValueError(f"unknown alert event {name!r}; known events: {known}") from None
    return event


def fingerprint(
    event: str,
    route: str,
    *,
    dag_id: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    attempt: int | None = None,
    extra: str | None = None,
) -> str:
    """One occurrence of `event` for `route`; parts that do not apply are left empty."""
    parts = [event, route, dag_id or "", run_id or "", task_id or "", str(attempt or "")]
    parts.append(extra or "")
    text = "|".join(part.replace("|", "/") for part in parts)
    if len(text) <= FINGERPRINT_LEN:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()  # long ids: a readable prefix + a hash
    return f"{text[: FINGERPRINT_LEN - len(digest) - 1]}#{digest}"


def group_key(event: str, route: str, dag_id: str | None, task_id: str | None) -> str:
    """Alerts of one key that come close together are delivered as one, with a count."""
    return "|".join(part.replace("|", "/") for part in (route, event, dag_id or "", task_id or ""))[
        :1000
    ]
