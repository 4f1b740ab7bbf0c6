"""The alert dispatcher: delivers outbox rows with retries, grouping and rate limits.

A service thread of the scheduler (and the foreground loop of `dagwatch alerts dispatch`).
Its loop never waits on a channel; one pass:

1. record what the deliveries in flight did (`alerts.delivery`): returned, or timed out
   after `alerts.delivery_timeout` (outcome unknown: the channel may have the message);
2. every few seconds, raise scheduler_unhealthy for scheduler jobs still marked running
   whose heartbeat is older than `scheduler.heartbeat_timeout` (one alert per job); a
   dispatcher starts judging once it has watched for one heartbeat timeout itself;
3. for each due row of a channel with no delivery in flight, claim it with a
   compare-and-set lease: `next_attempt_at` moves past the delivery's worst case only if
   the row is still pending and due, so two dispatchers never deliver one row, and a
   dispatcher that dies mid-delivery leaves a row that is due again when its lease ends.
   In the claim's transaction the route's `rate_limit` may suppress it, the group window
   may defer it, and the other due rows of its group are folded into it (one message,
   with a count); then hand it to the worker pool (`alerts.delivery_concurrency`).

Recording an attempt: sent; else pending again after retry_delay * 2**(attempt-1)
(capped by max_retry_delay) until `alerts.max_age` after it was queued, then failed.
The `alerts.max_attempts`-th failed attempt raises alert_delivery_failed for the other
routes, once (never for an alert_delivery_failed row); delivery goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from alerts import incidents, inflight, notifiers, outbox
from alerts import store as alert_store
from alerts.delivery import Delivery, DeliveryPool, InFlight, dedup_key, send, timeout_error
from alerts.events import SYSTEM_EVENTS, Event
from alerts.routes import Route, compose, dag_details, load_routes, run_link
from alerts.targets import Target
from engine import hooks, secrets
from engine.clock import SYSTEM, Clock, Every
from engine.exceptions import TransitionConflict
from engine.store.models import Alert
from metrics import stats

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.db import Store

log = logging.getLogger(__name__)

#: Seconds a claim outlives the delivery timeout before another dispatcher may take the row
#: (more than notifiers.LATE_ANSWER_GRACE: a late answer is known before the lease ends).
LEASE_MARGIN = 60.0
#: Seconds between two looks at the schedulers' heartbeats.
HEALTH_INTERVAL = 5.0
#: Seconds a scheduler job marked failed by another one still raises scheduler_unhealthy
RECENTLY_FAILED = 600.0
#: Seconds between two looks for rows held by a dead dispatcher of this host.
RELEASE_INTERVAL = 5.0
#: Seconds an idle dispatcher waits before looking for due rows again.
POLL_INTERVAL = 1.0
#: Rows one pass reads; more are taken by the next pass, at once.
BATCH = 100
RATE_WINDOW = timedelta(hours=1)
MAX_ERROR_BACKOFF = 30.0


@dataclass
class DispatchReport:
    """What one pass did."""

    sent: int = 0
    failed: int = 0
    retried: int = 0
    suppressed: int = 0
    #: rows folded into another row's message
    grouped: int = 0
    #: rows put back until their group window ends
    deferred: int = 0
    #: alerts this pass wrote (alert_delivery_failed, scheduler_unhealthy)
    raised: int = 0
    #: due rows another dispatcher claimed first
    contended: int = 0
    #: deliveries handed to the worker pool
    started: int = 0
    #: attempts recorded as timeouts (outcome unknown; retried)
    timed_out: int = 0

    @property
    def busy(self) -> bool:
        return bool(
            self.sent
            or self.failed
            or self.retried
            or self.suppressed
            or self.grouped
            or self.started
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class _Claim:
    """A claimed row, detached from its session: what delivering and recording need."""

    id: int
    event: str
    route: str | None
    severity: str
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    payload: dict[str, Any]
    attempts: int
    count: int
    created_at: datetime
    fingerprint: str
    #: when it entered the queue: it is retried until alerts.max_age after this
    queued_at: datetime
    #: why the row cannot be delivered at all (its route is gone): it fails at once
    problem: str | None = None
    #: an earlier delivery was interrupted mid-send: the channel may have it already
    possible_duplicate: bool = False

    @property
    def dedup(self) -> str:
        """The key the channel may deduplicate by: the same on every attempt (an incident's
        pages all carry the incident's key)."""
        return str(self.payload.get("incident_key") or "") or dedup_key(self.fingerprint)


def backoff(config: Config, attempt: int) -> timedelta:
    """The wait after failed attempt number `attempt` (1-based): exponential, capped."""
    delay = float(config["alerts.retry_delay"]) * 2 ** (attempt - 1)
    return timedelta(seconds=min(delay, float(config["alerts.max_retry_delay"])))


def _emit(name: str, route: str | None, event: str, channels: list[str]) -> None:
    for channel in channels or ["none"]:
        stats.incr(name, tags={"channel": channel, "route": route or "none", "event": event})


class Dispatcher:
    """Delivers the alert outbox: a scheduler service, or `dagwatch alerts dispatch`.

    `registry` ties the thread to the plugin installation that made it: once that is
    replaced or removed (`engine.runtime.reset`), the thread stops by itself. What is due
    (rows, pages, health checks, releasing a dead dispatcher's rows) is judged on `clock`;
    a delivery's timeout and the waits between passes are real time, since they bound a
    network call and a sleep.
    """

    name = "alert-dispatcher"

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        clock: Clock = SYSTEM,
        registry: hooks.Registry | None = None,
        poll_interval: float = POLL_INTERVAL,
        health_grace: float | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.routes: dict[str, Route] = load_routes(config)
        self.poll_interval = poll_interval
        self._registry = registry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_deadline: float | None = None
        #: a dispatcher gives schedulers this long to show a heartbeat before judging them
        self._health_grace = timedelta(
            seconds=float(config["scheduler.heartbeat_timeout"])
            if health_grace is None
            else health_grace
        )
        self._watching_since: datetime | None = None
        self._last_health: datetime | None = None
        self._health_routes = {
            name: route
            for name, route in self.routes.items()
            if Event.SCHEDULER_UNHEALTHY in route.events
        }
        self._timeout = float(config["alerts.delivery_timeout"])
        self._max_age = timedelta(seconds=float(config["alerts.max_age"]))
        #: set when a delivery returns (or `stop` is called): the loop looks at once
        self._wake = threading.Event()
        self._pool = DeliveryPool(int(config["alerts.delivery_concurrency"]), self._wake)
        self._grouped = any(route.grouped for route in self.routes.values())
        self._resolver = incidents.Resolver()
        #: when the next incident page is due (the idle loop wakes for it)
        self._next_page: datetime | None = None
        self._identity = inflight.identity()
        self._release_timer = Every(clock, RELEASE_INTERVAL)

    # -- the service ---------------------------------------------------------------------

    def start(self) -> None:
        """Dispatch from a daemon thread until `stop`."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.serve, args=(self._stop,), name="dagwatch-alert-dispatcher", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the thread: it delivers what is due now within `timeout`, then exits."""
        self._flush_deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout + 0.5)
            if self._thread.is_alive():
                log.warning("alert dispatcher still delivering after %.1f s; leaving it", timeout)
            self._thread = None

    def serve(self, stop: threading.Event) -> None:
        """Pass after pass until `stop` is set, then one last pass over what is due.

        Between passes it sleeps until a delivery returns, one times out, or the poll
        interval ends; it never waits on a channel.
        """
        failures = 0
        try:  # Apprise's first import takes seconds on a busy host: not the first page's time
            notifiers.warm_up()
        except Exception as exc:  # each delivery reports it then
            log.error("cannot import apprise: %s", exc)
        while not stop.is_set() and self._owned():
            self._wake.clear()  # before the pass: a delivery returning during it wakes the next
            try:
                report = self._pass(self.clock.now(), self.clock.monotonic())
                failures = 0
            except Exception as exc:  # the metastore is away: wait, never die
                failures += 1
                wait = min(MAX_ERROR_BACKOFF, 0.5 * 2**failures)
                log.error("alert dispatch failed, retrying in %.1f s: %s", wait, exc)
                stop.wait(wait)
                continue
            if not report.busy:
                self._wake.wait(self._idle_wait(None))
        if self._owned():
            self._flush()

    def _flush(self) -> None:
        deadline = self._flush_deadline or time.monotonic() + self._timeout
        try:
            self.run_once(self.clock.now(), deadline=deadline, check_health=False)
        except Exception as exc:
            log.error("alert dispatch at shutdown failed: %s", exc)

    def _owned(self) -> bool:
        return self._registry is None or hooks.current() is self._registry

    def _idle_wait(self, deadline: float | None) -> float:
        """Seconds to sleep: until the next delivery times out, capped by the poll interval."""
        now = time.monotonic()
        wait = self.poll_interval
        if self._next_page is not None:
            wait = min(wait, max(0.0, (self._next_page - self.clock.now()).total_seconds()))
        for moment in (self._pool.next_deadline(), deadline):
            if moment is not None:
                wait = min(wait, max(0.0, moment - now))
        return wait

    # -- one pass ------------------------------------------------------------------------

    def run_once(
        self,
        now: datetime | None = None,
        *,
        deadline: float | None = None,
        check_health: bool = True,
    ) -> DispatchReport:
        """Deliver every row due at `now` and record the outcomes, each row at most once.

        Channels are delivered to side by side, one delivery at a time each; this returns
        when every delivery it started returned or timed out (or at the `deadline` of
        `time.monotonic()`, when those still in flight are recorded as timeouts).
        """
        now = now or self.clock.now()
        started = self.clock.monotonic()
        report = DispatchReport()
        seen: set[int] = set()
        while self._owned():
            self._wake.clear()
            before = report.started + len(seen)
            late = deadline is not None and time.monotonic() >= deadline
            self._pass(now, started, report, seen=seen, check_health=check_health, start=not late)
            check_health = False
            if not self._pool.unsettled() and report.started + len(seen) == before:
                break
            if deadline is not None and time.monotonic() >= deadline:
                self._settle(report, cutoff=True)
                break
            if self._pool.unsettled():
                self._wake.wait(self._idle_wait(deadline))
        return report

    def _pass(
        self,
        now: datetime,
        started: float,
        report: DispatchReport | None = None,
        *,
        seen: set[int] | None = None,
        check_health: bool = True,
        start: bool = True,
    ) -> DispatchReport:
        """Record what the deliveries in flight did, then start those now due (rows due at
        `now`; the clock has moved on since `started`, its monotonic reading then)."""
        report = report or DispatchReport()
        self._settle(report)
        self._release_orphans(now)
        if check_health and self._health_due(now):
            self._check_schedulers(now, report)
        if self._grouped:
            self._group(now, report)
        free = self._pool.free() if start else 0
        if free <= 0:
            return report
        busy = self._pool.busy_channels()
        with self.store.session(readonly=True) as session:
            due = [
                (alert.id, alert.channel or alert.route or "")
                for alert in alert_store.due(session, now, BATCH, sorted(busy))
            ]
        if due:
            notifiers.load_apprise()  # its first import takes a second: not a delivery's time
        for alert_id, channel in due:
            if free <= 0 or not self._owned():
                break
            if channel in busy or (seen is not None and alert_id in seen):
                continue
            if seen is not None:
                seen.add(alert_id)
            at = now + timedelta(seconds=self.clock.monotonic() - started)
            claim = self._claim(alert_id, at, report)
            if claim is None:
                continue
            if claim.problem is not None:
                self._record(claim, Delivery(False, claim.problem, 0.0), at, report)
                continue
            moment = time.monotonic()  # the delivery's timeout bounds a real network call
            job = InFlight(channel, claim, at, moment, moment + self._timeout)
            self._pool.submit(job, partial(self._send, claim))
            report.started += 1
            busy.add(channel)
            free -= 1
        return report

    def _release_orphans(self, now: datetime) -> None:
        """Rows a dead dispatcher of this host held: due now (at start, then now and then)."""
        if not self._release_timer.due():
            return
        with self.store.session() as session:
            released = inflight.release_orphans(session, now)
        if released:
            log.warning(
                "%d alert(s) held by a stopped dispatcher are due again: %s",
                len(released),
                ", ".join(f"#{alert_id}" for alert_id in released),
            )

    def _claim(self, alert_id: int, at: datetime, report: DispatchReport) -> _Claim | None:
        """Lease the row if it is still pending and due; apply rate limit and group window."""
        lease = float(self.config["alerts.delivery_timeout"]) + LEASE_MARGIN
        suppressed: list[tuple[str | None, str]] = []
        claim = None
        with self.store.session() as session:
            won = alert_store.claim(
                session, alert_id, at=at, lease_until=at + timedelta(seconds=lease)
            )
            alert = session.get(Alert, alert_id) if won else None
            if alert is None:
                report.contended += 1
                return None
            route = self.routes.get(alert.route or "")
            if route is None and alert.route != notifiers.NOTIFIER_ROUTE:
                claim = _snapshot(alert, problem=f"route {alert.route!r} is not configured")
            elif (
                incidents.is_member(route, alert.event, alert.dag_id) and alert.incident_id is None
            ):
                assert route is not None
                report.grouped += incidents.attach(session, route, alert, at)
            elif route is not None and self._over_rate_limit(session, route, alert, at):
                outbox.mark(session, [alert.id], status=outbox.SUPPRESSED, reason="rate limited")
                report.suppressed += 1
                suppressed.append((alert.route, alert.event))
            elif self._defer_for_window(session, alert, at):
                report.deferred += 1
            else:
                folded = self._fold_group(session, alert, at)
                report.grouped += len(folded)
                suppressed += [(row.route, row.event) for row in folded]
                count = (alert.count or 1) + sum(row.count or 1 for row in folded)
                if folded:
                    alert_store.set_alert(session, alert.id, count=count)
                claim = _snapshot(alert, count=count)
                attempts, duplicate = inflight.begin(
                    session, alert.id, attempts=claim.attempts, at=at, by=self._identity
                )
                claim = replace(claim, attempts=attempts, possible_duplicate=duplicate)
        for route_name, event in suppressed:  # once the transaction has committed
            _emit("alert.suppressed", route_name, event, [])
        return claim

    def _over_rate_limit(self, session: Session, route: Route, alert: Alert, at: datetime) -> bool:
        """Whether the route used its rate limit (system events neither use nor obey it)."""
        if not route.rate_limit or alert.event in SYSTEM_EVENTS:
            return False
        since = at - RATE_WINDOW
        system = [event.value for event in SYSTEM_EVENTS]
        return (
            alert_store.sent_count(session, route.name, since, except_events=system)
            >= route.rate_limit
        )

    def _group(self, now: datetime, report: DispatchReport) -> None:
        """Attach new alerts to their incidents, resolve those whose work succeeded again,
        and write the pages that are due (delivered by this same pass)."""
        resolving: list[int] = []
        with self.store.session(readonly=True) as session:  # no write lock when idle
            work = incidents.work_due(session, self.routes, now)
            if self._resolver.due(now):
                resolving = self._resolver.find(session, now)
            self._next_page = incidents.next_page_at(session)
        if not work and not resolving:
            return
        with self.store.session() as session:
            report.grouped += incidents.group_pending(session, self.routes, now)
            incidents.resolve_all(session, resolving, self.routes, self.config, now)
            self._next_page = incidents.page_due(session, self.routes, self.config, now)

    def _window(self) -> timedelta:
        return timedelta(seconds=float(self.config["alerts.group_window"]))

    def _defer_for_window(self, session: Session, alert: Alert, at: datetime) -> bool:
        """Hold the row until the group window of the group's last delivery ends."""
        window = self._window()
        if not window or not alert.group_key:
            return False
        last = alert_store.last_sent_in_group(session, alert.group_key)
        if last is None or last.sent_at is None or last.sent_at + window <= at:
            return False
        outbox.mark(
            session,
            [alert.id],
            status=outbox.PENDING,
            reason=f"waiting for the group window of alert #{last.id}",
            next_attempt_at=last.sent_at + window,
        )
        return True

    def _fold_group(self, session: Session, alert: Alert, at: datetime) -> list[Any]:
        """Suppress the other due rows of the group into this one; returns them.

        Compare-and-set as the claim is: a row another dispatcher leased meanwhile is no
        longer due, so it is left to that dispatcher.
        """
        if not self._window() or not alert.group_key:
            return []
        return alert_store.fold_group(
            session, alert, at=at, reason=f"grouped into alert #{alert.id}"
        )

    # -- delivering ----------------------------------------------------------------------

    def _send(self, claim: _Claim) -> Delivery:
        """Deliver a claimed row (in a worker thread of the pool)."""
        try:
            target, title, body, notify_type = self.message(claim)
        except Exception as exc:  # a bad key, template or connection fails this attempt only
            error = secrets.redact(f"cannot build the message: {type(exc).__name__}: {exc}")
            return Delivery(False, error, 0.0)
        return send(
            target, title, body, notify_type, self.config, timeout=self._timeout, dedup=claim.dedup
        )

    def message(self, claim: _Claim) -> tuple[Target, str, str, str]:
        """(target, title, body, notify_type) of a claimed row."""
        payload = claim.payload
        if claim.route == notifiers.NOTIFIER_ROUTE:
            target = notifiers.unseal_target(payload.get("target") or {}, self.config)
            title, body = str(payload.get("title") or ""), str(payload.get("body") or "")
            notify_type = payload.get("notify_type") or notifiers.notify_type_of(
                claim.event, claim.severity
            )
        elif claim.event in incidents.PAGE_EVENTS:
            route = self.routes[claim.route or ""]
            return route.target, *self._render_page(route, claim), self._page_type(claim)
        else:
            route = self.routes[claim.route or ""]
            target = route.target
            title, body = self._render(route, claim)
            notify_type = notifiers.notify_type_of(claim.event, claim.severity)
        title, body = _with_count(title, body, claim)
        if claim.possible_duplicate:
            title, body = inflight.mark_message(title, body, claim.dedup)
        return target, title, body, notify_type

    def _page_type(self, claim: _Claim) -> str:
        if claim.event == Event.INCIDENT_RESOLVED.value:
            return "success"
        return notifiers.notify_type_of(claim.event, claim.severity)

    def _render_page(self, route: Route, claim: _Claim) -> tuple[str, str]:
        """An incident's page: the route's templates over the incident, else the default."""
        title, body = incidents.default_message(claim.payload)
        context = {**claim.payload, "route": claim.route, "title": title, "body": body}
        try:
            if route.title:
                title = notifiers.render(route.title, context)
            if route.body:
                body = notifiers.render(route.body, context)
        except Exception as exc:  # a broken route template must not lose the page
            body = f"{body}\n\n(route {route.name}: its template failed: {exc})"
        return title, body

    def _render(self, route: Route, claim: _Claim) -> tuple[str, str]:
        context = {
            **claim.payload,
            "alert_id": claim.id,
            "route": claim.route,
            "severity": claim.severity,
            "count": claim.count,
            "more": claim.count - 1,
        }
        for key in ("dag_id", "run_id", "task_id"):
            context.setdefault(key, getattr(claim, key))
        context.setdefault("link", run_link(self.config, claim.dag_id, claim.run_id))
        try:
            return notifiers.render_message(claim.event, context, route.title, route.body)
        except Exception as exc:  # a broken route template must not lose the alert
            title, body = notifiers.render_message(claim.event, context)
            return title, f"{body}\n\n(route {route.name}: its template failed: {exc})"

    # -- recording -----------------------------------------------------------------------

    def _settle(self, report: DispatchReport, *, cutoff: bool = False) -> None:
        """Record the deliveries that timed out and those that returned (`cutoff`: all)."""
        now = time.monotonic()  # deliveries time out in real time (see `_pass`)
        timed_out, done = self._pool.collect(now, cutoff=cutoff)
        for job in timed_out:
            moment = min(job.deadline, job.finished or now, now)
            waited = moment - job.started
            why = "the dispatcher stopped" if moment < job.deadline else "alerts.delivery_timeout"
            delivery = Delivery(False, timeout_error(waited, why), waited, timed_out=True)
            self._record(job.claim, delivery, job.when(moment), report)
        for job in done:
            assert job.result is not None and job.finished is not None
            if job.expired:
                self._settle_late(job, report)
            else:
                self._record(job.claim, job.result, job.when(job.finished), report)

    def _settle_late(self, job: InFlight, report: DispatchReport) -> None:
        """A delivery recorded as a timeout answered after all: note it; if ok, it is sent."""
        claim, result = job.claim, job.result
        assert result is not None and job.finished is not None
        waited = job.finished - job.started
        note = f"then, after {waited:.1f} s: " + ("delivered" if result.ok else str(result.error))
        at = job.when(job.finished)
        with self.store.session() as session:
            sent = outbox.settle_late(
                session, claim.id, attempt=claim.attempts + 1, ok=result.ok, note=note, now=at
            )
        where = f"alert #{claim.id} ({claim.event}, route {claim.route})"
        extra = {"action": "alert_delivery", "alert_id": claim.id, "attempt": claim.attempts + 1}
        if sent:
            report.sent += 1
            self._emit_delivered(claim, result, at)
        log.info("%s: attempt %d timed out, %s", where, claim.attempts + 1, note, extra=extra)

    def _record(
        self, claim: _Claim, delivery: Delivery, at: datetime, report: DispatchReport
    ) -> None:
        attempt = claim.attempts + 1
        horizon = claim.queued_at + self._max_age
        final = claim.problem is not None or (not delivery.ok and at >= horizon)
        max_attempts = int(self.config["alerts.max_attempts"])
        # once per alert: at the max_attempts-th failure, or at the end if that never came
        undelivered = not delivery.ok and (
            attempt == max_attempts or (final and attempt < max_attempts)
        )
        escalate = undelivered and claim.event != Event.ALERT_DELIVERY_FAILED.value
        record: dict[str, Any] = {
            "attempt": attempt,
            "ok": delivery.ok,
            "latency": delivery.latency,
            "error": delivery.error,
            "now": at,
            "timed_out": delivery.timed_out,
        }
        if delivery.ok:
            record |= {"status": outbox.SENT}
        elif not final:
            retry_at = min(at + backoff(self.config, attempt), horizon)
            record |= {"status": outbox.PENDING, "next_attempt_at": retry_at}
        else:
            record |= {"status": outbox.FAILED}
        try:
            with self.store.session() as session:
                outbox.record_delivery(session, claim.id, **record)
                if escalate:
                    report.raised += self._raise_delivery_failed(
                        session, claim, delivery, at, final
                    )
        except TransitionConflict as exc:  # moved by another writer while it was delivered
            report.contended += 1
            log.warning("alert #%d: outcome of attempt %d not recorded: %s", claim.id, attempt, exc)
            return
        self._after_record(claim, delivery, attempt, final, at, report)
        if undelivered:
            _emit("alert.failed", claim.route, claim.event, delivery.channels)

    def _emit_delivered(self, claim: _Claim, delivery: Delivery, at: datetime) -> None:
        _emit("alert.delivered", claim.route, claim.event, delivery.channels)
        waited = max(0.0, (at - claim.created_at).total_seconds())
        for channel in delivery.channels or ["none"]:
            stats.timing("alert.delivery_latency", waited, tags={"channel": channel})

    def _after_record(
        self,
        claim: _Claim,
        delivery: Delivery,
        attempt: int,
        final: bool,
        at: datetime,
        report: DispatchReport,
    ) -> None:
        where = f"alert #{claim.id} ({claim.event}, route {claim.route})"
        extra = {"action": "alert_delivery", "alert_id": claim.id, "attempt": attempt}
        report.timed_out += delivery.timed_out
        if delivery.ok:
            report.sent += 1
            self._emit_delivered(claim, delivery, at)
            log.info("%s delivered (attempt %d)", where, attempt, extra=extra)
        elif not final:
            report.retried += 1
            log.warning(
                "%s: attempt %d failed, retrying: %s", where, attempt, delivery.error, extra=extra
            )
        else:
            report.failed += 1
            log.error(
                "%s failed after %d attempt(s): %s", where, attempt, delivery.error, extra=extra
            )

    def _raise_delivery_failed(
        self,
        session: Session,
        claim: _Claim,
        delivery: Delivery,
        at: datetime,
        final: bool,
    ) -> int:
        """alert_delivery_failed for every other route that wants it (the fallback route)."""
        others = self._delivery_failed_routes(session, claim)
        horizon = claim.queued_at + self._max_age
        message = (
            "dagwatch gave up on it"
            if final
            else f"dagwatch keeps retrying until {horizon:%Y-%m-%d %H:%M:%S} UTC (alerts.max_age)"
        )
        payload = {
            "failed_alert_id": claim.id,
            "failed_event": claim.event,
            "failed_route": claim.route,
            "attempts": claim.attempts + 1,
            "error": delivery.error,
            "state": "failed" if final else "retrying",
            "message": message,
            "dag_id": claim.dag_id,
            "run_id": claim.run_id,
            "task_id": claim.task_id,
            "link": claim.payload.get("link") or run_link(self.config, claim.dag_id, claim.run_id),
        }
        rows = compose(
            others, Event.ALERT_DELIVERY_FAILED, payload=payload, extra=f"alert-{claim.id}"
        )
        return len(outbox.enqueue(session, rows, at))

    def _delivery_failed_routes(self, session: Session, claim: _Claim) -> dict[str, Route]:
        """The other routes, those filtered by DAG only if the failed alert was about one of
        their DAGs (or about none)."""
        others = {name: route for name, route in self.routes.items() if name != claim.route}
        if claim.dag_id is None:
            return others
        needs = any(route.needs_dag_details for route in others.values())
        details = (
            dag_details(session, [claim.dag_id]).get(claim.dag_id, ((), None))
            if needs
            else ((), None)
        )
        return {
            name: route
            for name, route in others.items()
            if not route.filtered
            or route.matches(Event.ALERT_DELIVERY_FAILED, claim.dag_id, *details)
        }

    # -- scheduler health ----------------------------------------------------------------

    def _health_due(self, now: datetime) -> bool:
        if not self._health_routes:
            return False
        if self._watching_since is None:
            self._watching_since = now
        if now - self._watching_since < self._health_grace:
            return False
        if self._last_health is not None and (now - self._last_health).total_seconds() < (
            HEALTH_INTERVAL
        ):
            return False
        self._last_health = now
        return True

    def _check_schedulers(self, now: datetime, report: DispatchReport) -> None:
        """scheduler_unhealthy for each scheduler job whose heartbeat stopped: still said
        running, or recently marked failed by another scheduler that noticed its silence
        first (several schedulers on PostgreSQL)."""
        timeout = float(self.config["scheduler.heartbeat_timeout"])
        with self.store.session(readonly=True) as session:
            silent = alert_store.silent_schedulers(
                session, now, timedelta(seconds=timeout), RECENTLY_FAILED
            )
        rows = []
        for job in silent:
            quiet = (now - job.latest_heartbeat).total_seconds()
            payload = {
                "job_id": job.id,
                "hostname": job.hostname,
                "pid": job.pid,
                "latest_heartbeat": job.latest_heartbeat.isoformat(),
                "state": "unhealthy",
                "message": f"no heartbeat for {quiet:.0f} s "
                f"(scheduler.heartbeat_timeout = {timeout:g} s)",
            }
            rows += compose(
                self._health_routes,
                Event.SCHEDULER_UNHEALTHY,
                payload=payload,
                extra=f"job-{job.id}",
            )
        if rows:
            with self.store.session() as session:
                report.raised += len(outbox.enqueue(session, rows, now))


def _snapshot(alert: Alert, *, count: int | None = None, problem: str | None = None) -> _Claim:
    return _Claim(
        id=alert.id,
        event=alert.event,
        route=alert.route,
        severity=alert.severity,
        dag_id=alert.dag_id,
        run_id=alert.run_id,
        task_id=alert.task_id,
        payload=dict(alert.payload or {}),
        attempts=alert.attempts or 0,
        count=count or alert.count or 1,
        created_at=alert.created_at,
        fingerprint=alert.fingerprint,
        queued_at=alert.queued_at or alert.created_at,
        problem=problem,
    )


def _with_count(title: str, body: str, claim: _Claim) -> tuple[str, str]:
    """A message standing for several alerts says how many more."""
    more = claim.count - 1
    if more <= 0:
        return title, body
    subject = "task" if claim.task_id else "DAG" if claim.dag_id else "kind"
    note = f"… and {more} more {claim.event} alert(s) of this {subject} since the last message"
    return f"{title} (+{more} more)", f"{body}\n\n{note}" if body else note
