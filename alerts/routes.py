"""Routes: which events, for which DAGs, tags or owners, go to which channels.

Configured as `[alerts.routes.NAME]` tables (or `DAGWATCH__ALERTS__ROUTES` as JSON):

    [alerts.routes.oncall]
    urls = ["env:PAGERDUTY_URL"]          # or conn_id = "pagerduty", or tag = "oncall"
    events = ["task_failed", "dag_run_failed", "sla_missed"]   # default: failures and misses
    dags = ["billing_*"]                  # globs; default: every DAG
    tags = ["critical"]                   # DAG tags, any of them; default: any
    owners = ["data-eng"]                 # DAG owners, any of them; default: any
    severity = "critical"                 # default: the event's own severity
    rate_limit = 20                       # deliveries per hour; default: unlimited
    title = "{{ dag_id }} failed"         # Jinja templates over the alert's context
    body = "..."
    group_by = ["dag_id", "run_id"]       # one incident per run (default: alerts.group_by)
    group_wait = 5                        # seconds an incident's first page waits
    group_interval = 60                   # seconds between two pages of one incident
    send_resolved = true                  # page when the incident's work succeeds again

A route with `dags`, `tags` or `owners` receives system events (scheduler_unhealthy,
alert_delivery_failed, import_error) only if its `events` names them.
`alerts.fallback_urls` adds a route named `fallback` for alert_delivery_failed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from sqlalchemy import select

from alerts.events import (
    DEFAULT_EVENTS,
    DEFAULT_SEVERITY,
    SEVERITIES,
    SYSTEM_EVENTS,
    Event,
    fingerprint,
    group_key,
    parse_event,
)
from alerts.outbox import NewAlert
from alerts.targets import Target
from engine.config import GROUP_FIELDS
from engine.exceptions import ConfigError
from engine.store.models import Dag

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from engine.config import Config

FALLBACK_ROUTE = "fallback"
_KEYS = frozenset(
    {"urls", "conn_id", "tag", "events", "dags", "tags", "owners", "severity", "rate_limit"}
    | {"title", "body", "group_by", "group_wait", "group_interval", "send_resolved"}
)
#: One incident per DAG run, unless alerts.group_by or the route says otherwise.
DEFAULT_GROUP_BY = ("dag_id", "run_id")


@dataclass(frozen=True)
class Grouping:
    """How a route groups its alerts into incidents (the defaults come from alerts.*)."""

    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    group_wait: float = 5.0
    group_interval: float = 60.0
    send_resolved: bool = False

    @classmethod
    def from_config(cls, config: Config) -> Grouping:
        fields = str(config["alerts.group_by"]).split(",")
        return cls(
            group_by=tuple(field.strip() for field in fields if field.strip()),
            group_wait=float(config["alerts.group_wait"]),
            group_interval=float(config["alerts.group_interval"]),
            send_resolved=bool(config["alerts.send_resolved"]),
        )


@dataclass(frozen=True)
class Route:
    """One route: a target and the events it receives."""

    name: str
    target: Target
    events: frozenset[Event] = DEFAULT_EVENTS
    dags: tuple[str, ...] = ()
    tags: frozenset[str] = frozenset()
    owners: frozenset[str] = frozenset()
    severity: str | None = None
    rate_limit: int | None = None
    title: str | None = None
    body: str | None = None
    grouping: Grouping = Grouping()

    @property
    def needs_dag_details(self) -> bool:
        return bool(self.tags or self.owners)

    @property
    def filtered(self) -> bool:
        """Limited to some DAGs (by glob, tag or owner)."""
        return bool(self.dags or self.tags or self.owners)

    @property
    def grouped(self) -> bool:
        """Its DAG alerts are grouped into incidents (group_by is not empty)."""
        return bool(self.grouping.group_by)

    def matches(
        self,
        event: Event,
        dag_id: str | None = None,
        tags: Iterable[str] = (),
        owner: str | None = None,
    ) -> bool:
        """Whether this route receives `event` of `dag_id` (with the DAG's tags and owner)."""
        if event not in self.events:
            return False
        if dag_id is None:  # deployment-wide events (scheduler, delivery) ignore DAG filters
            return True
        if self.dags and not any(fnmatch.fnmatchcase(dag_id, g) for g in self.dags):
            return False
        if self.tags and not self.tags.intersection(tags):
            return False
        owners = {part.strip() for part in (owner or "").split(",") if part.strip()}
        return not (self.owners and not self.owners.intersection(owners))

    def severity_of(self, event: Event) -> str:
        return self.severity or DEFAULT_SEVERITY[event]


def _strings(name: str, key: str, raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ConfigError(f"alerts.routes.{name}.{key} must be a list of strings")
    return tuple(raw)


def parse_route(name: str, table: Any, defaults: Grouping | None = None) -> Route:
    """One `[alerts.routes.NAME]` table as a Route; a ConfigError names what is wrong."""
    where = f"alerts.routes.{name}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(sorted(_KEYS))}")  # fmt: skip
    try:
        target = Target.from_fields(
            _strings(name, "urls", table.get("urls")), table.get("conn_id"), table.get("tag")
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    try:
        events = frozenset(parse_event(e) for e in _strings(name, "events", table.get("events")))
    except ValueError as exc:
        raise ConfigError(f"{where}.events: {exc}") from None
    severity = table.get("severity")
    if severity is not None and severity not in SEVERITIES:
        raise ConfigError(f"{where}.severity = {severity!r}; allowed: {', '.join(SEVERITIES)}")
    rate_limit = table.get("rate_limit")
    if rate_limit is not None and (
        isinstance(rate_limit, bool) or not isinstance(rate_limit, int) or rate_limit < 1
    ):
        raise ConfigError(f"{where}.rate_limit must be a whole number of alerts per hour (>= 1)")
    route = Route(
        name=name,
        target=target,
        events=events or DEFAULT_EVENTS,
        dags=_strings(name, "dags", table.get("dags")),
        tags=frozenset(_strings(name, "tags", table.get("tags"))),
        owners=frozenset(_strings(name, "owners", table.get("owners"))),
        severity=severity,
        rate_limit=rate_limit,
        title=table.get("title"),
        body=table.get("body"),
        grouping=_grouping(name, table, defaults or Grouping()),
    )
    if route.filtered and not events:  # system events only to filtered routes that ask
        route = replace(route, events=DEFAULT_EVENTS - SYSTEM_EVENTS)
    return route


def _grouping(name: str, table: Mapping[str, Any], defaults: Grouping) -> Grouping:
    """The route's group_by, group_wait, group_interval and send_resolved, checked."""
    where = f"alerts.routes.{name}"
    group_by = defaults.group_by
    if "group_by" in table:
        group_by = _strings(name, "group_by", table["group_by"])
        bad = [field for field in group_by if field not in GROUP_FIELDS]
        if bad:
            raise ConfigError(
                f"{where}.group_by: unknown field(s) {', '.join(map(repr, bad))}; allowed: "
                f"{', '.join(GROUP_FIELDS)} (or [] for one message per alert)"
            )
    seconds = {}
    for key in ("group_wait", "group_interval"):
        value = table.get(key, getattr(defaults, key))
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}.{key} = {value!r}: must be a number of seconds >= 0")
        seconds[key] = float(value)
    send_resolved = table.get("send_resolved", defaults.send_resolved)
    if not isinstance(send_resolved, bool):
        raise ConfigError(f"{where}.send_resolved = {send_resolved!r}: must be true or false")
    return Grouping(tuple(dict.fromkeys(group_by)), send_resolved=send_resolved, **seconds)


def load_routes(config: Config) -> dict[str, Route]:
    """The configured routes by name, plus `fallback` when alerts.fallback_urls is set."""
    defaults = Grouping.from_config(config)
    routes = {
        name: parse_route(name, table, defaults) for name, table in config["alerts.routes"].items()
    }
    fallback = config["alerts.fallback_urls"]
    if fallback and FALLBACK_ROUTE not in routes:
        routes[FALLBACK_ROUTE] = Route(
            FALLBACK_ROUTE,
            Target.from_fields(fallback, None, None),
            events=frozenset({Event.ALERT_DELIVERY_FAILED}),
        )
    return routes


def wanted_events(routes: Mapping[str, Route]) -> frozenset[Event]:
    """Every event some route receives (nothing else needs to be looked at)."""
    return frozenset(event for route in routes.values() for event in route.events)


def dag_details(
    session: Session, dag_ids: Iterable[str]
) -> dict[str, tuple[list[str], str | None]]:
    """Tags and owner of each DAG, for routes that filter on them (one query)."""
    ids = sorted(set(dag_ids))
    if not ids:
        return {}
    rows = session.execute(select(Dag.dag_id, Dag.tags, Dag.owner).where(Dag.dag_id.in_(ids)))
    return {dag_id: (list(tags or ()), owner) for dag_id, tags, owner in rows}


def run_link(config: Config, dag_id: str | None, run_id: str | None) -> str | None:
    """The console page of a run (or of a DAG), for the alert's message."""
    if not dag_id:
        return None
    base = str(config["alerts.console_url"]).rstrip("/")
    query = {"dag_id": dag_id} | ({"run_id": run_id} if run_id else {})
    return f"{base}/runs?{urlencode(query)}"


def compose(
    routes: Mapping[str, Route],
    event: Event,
    *,
    payload: Mapping[str, Any],
    dag_id: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    attempt: int | None = None,
    details: tuple[Iterable[str], str | None] = ((), None),
    extra: str | None = None,
    suppressed_reason: str | None = None,
) -> list[NewAlert]:
    """One outbox row per route that receives this occurrence of `event`."""
    tags, owner = details
    rows = []
    for route in routes.values():
        if not route.matches(event, dag_id, tags, owner):
            continue
        rows.append(
            NewAlert(
                event=event.value,
                route=route.name,
                fingerprint=fingerprint(
                    event.value,
                    route.name,
                    dag_id=dag_id,
                    run_id=run_id,
                    task_id=task_id,
                    attempt=attempt,
                    extra=extra,
                ),
                severity=route.severity_of(event),
                dag_id=dag_id,
                run_id=run_id,
                task_id=task_id,
                payload={**payload, "event": event.value, "severity": route.severity_of(event)},
                group_key=group_key(event.value, route.name, dag_id, task_id),
                suppressed_reason=suppressed_reason,
            )
        )
    return rows
