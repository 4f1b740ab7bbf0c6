"""Sending one notification, and the deliveries in flight.

`send` delivers in the calling thread, its sockets bounded so that a channel that never
answers cannot hold the thread for good; whoever waits on it decides when it has timed
out (`deliver` for a direct send, the dispatcher's `DeliveryPool` for the outbox). A
timeout is not a failure: the channel may have the message, so the outcome is unknown.
Where a channel takes one, the message carries a dedup key that stays the same across
retries: PagerDuty's `dedup_key`, an `Idempotency-Key` header on webhooks.

The pool runs at most `alerts.delivery_concurrency` deliveries, one per channel at a time,
each in its own thread. The dispatcher never waits on a channel: when it is woken (a
delivery returned) or a delivery's time is up, it `collect`s what finished and what ran
past its timeout. A delivery that timed out keeps its channel busy until its thread
returns (its sockets end it soon after), so a hanging channel holds one thread at most,
never delays another channel, and is retried only once its late answer, if any, is known.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from alerts.notifiers import NOTIFY_TYPES, build_apprise, load_apprise
from alerts.targets import Target
from engine import secrets
from engine.exceptions import DagwatchError

if TYPE_CHECKING:
    from engine.config import Config

#: Delivery error texts are cut to this many characters.
MAX_ERROR_LEN = 2000
#: Seconds a request may still wait for an answer after its delivery timed out (an answer
#: then settles the unknown outcome); past it the socket gives up and frees its thread.
LATE_ANSWER_GRACE = 5.0
#: The header carrying the dedup key on webhooks (json://, xml://, form://).
DEDUP_HEADER = "Idempotency-Key"
_WEBHOOK_SCHEMES = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})


# -- delivery ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """The outcome of one delivery: ok, the error (secret-free), seconds, Apprise channels."""

    ok: bool
    error: str | None
    latency: float
    #: the Apprise service schemes notified (json, mailto, slack...), in order
    channels: list[str] = field(default_factory=list)
    #: no answer within the timeout: the channel may have the message (outcome unknown)
    timed_out: bool = False


def timeout_error(seconds: float, why: str = "alerts.delivery_timeout") -> str:
    """The error text of a delivery that got no answer in time (`why`: whose time it was)."""
    return (
        f"timeout: no answer within {seconds:.1f} s ({why}); the channel may have received"
        " it (outcome unknown)"
    )


def dedup_key(fingerprint: str) -> str:
    """The dedup key of an alert: stable across its retries, its dispatchers and restarts."""
    return "dagwatch-" + hashlib.sha256(fingerprint.encode()).hexdigest()[:32]


def _error_text(text: str) -> str:
    text = secrets.redact(text.strip())
    return text if len(text) <= MAX_ERROR_LEN else text[: MAX_ERROR_LEN - 1] + "…"


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "unknown"


def deliver(
    target: Target,
    title: str,
    body: str,
    notify_type: str,
    config: Config,
    *,
    timeout: float | None = None,
    dedup: str | None = None,
) -> Delivery:
    """Send one notification now; ok only if every channel took it within the timeout.

    The sending thread is left behind on a timeout; its sockets end it soon after.
    """
    seconds = float(timeout if timeout is not None else config["alerts.delivery_timeout"])
    outcome: list[Delivery] = []

    def work() -> None:
        outcome.append(send(target, title, body, notify_type, config, timeout=seconds, dedup=dedup))

    thread = threading.Thread(target=work, name="dagwatch-notify", daemon=True)
    thread.start()
    thread.join(seconds)
    if outcome:
        return outcome[0]
    return Delivery(False, timeout_error(seconds), seconds, timed_out=True)


def send(
    target: Target,
    title: str,
    body: str,
    notify_type: str,
    config: Config,
    *,
    timeout: float,
    dedup: str | None = None,
) -> Delivery:
    """Send one notification in this thread; its sockets wait `timeout` + LATE_ANSWER_GRACE.

    The caller decides when the delivery has timed out (it keeps the thread until then).
    The title and body leave this process with every secret it knows masked (the
    target's own URLs included), whoever composed them.
    """
    started = time.monotonic()
    try:
        notifier = build_apprise(target, config)
    except (DagwatchError, ValueError, OSError) as exc:
        return Delivery(False, _error_text(str(exc)), time.monotonic() - started)
    title, body = secrets.redact(title), secrets.redact(body)
    apprise = load_apprise()
    tag = target.tag or apprise.common.MATCH_ALL_TAG
    try:
        for service in notifier.find(tag):
            _bound_sockets(service, timeout + LATE_ANSWER_GRACE)
            if dedup:
                _add_dedup_key(service, dedup, resolve=notify_type == "success")
        result = notifier.notify(
            body=body or title,
            title=title,
            notify_type=notify_type if notify_type in NOTIFY_TYPES else "info",
            tag=tag,
        )
    except Exception as exc:  # Apprise raising is a failed delivery, never a crashed dispatcher
        return Delivery(False, _error_text(f"{type(exc).__name__}: {exc}"), _since(started))
    try:
        return _outcome(result, target, _since(started))
    finally:
        result.close()


def _since(started: float) -> float:
    return time.monotonic() - started


def _bound_sockets(service: Any, seconds: float) -> None:
    """No socket of this service waits longer than `seconds` (a URL's own rto/cto included)."""
    service.socket_read_timeout = seconds
    connect = getattr(service, "socket_connect_timeout", None)
    service.socket_connect_timeout = min(float(connect), seconds) if connect else seconds


def _add_dedup_key(service: Any, key: str, *, resolve: bool = False) -> None:
    """Give the service the alert's dedup key where it takes one, unless the URL set its own.

    PagerDuty: the event's `dedup_key` (retries and an incident's pages update one
    incident; a recovery with `resolve` resolves it unless the URL chose an action);
    Opsgenie: the alert's `alias`; webhooks: a header.
    """
    protocols: set[str] = set()
    for attribute in ("protocol", "secure_protocol"):
        value = getattr(service, attribute, None)
        protocols.update([value] if isinstance(value, str) else value or ())
    if "pagerduty" in protocols:
        if not getattr(service, "dedup", None):
            service.dedup = key
        if resolve and getattr(service, "action", None) == "trigger":
            service.action = "resolve"
    elif "opsgenie" in protocols:
        if not getattr(service, "alias", None):
            service.alias = key
    elif protocols & _WEBHOOK_SCHEMES and isinstance(getattr(service, "headers", None), dict):
        if not any(name.lower() == DEDUP_HEADER.lower() for name in service.headers):
            service.headers[DEDUP_HEADER] = key


def _outcome(result: Any, target: Target, latency: float) -> Delivery:
    status = load_apprise().AppriseResultStatus
    services = list(result.results)
    channels = list(dict.fromkeys(_scheme(service.url) for service in services))
    failed = [service for service in services if service.status != status.SUCCESS]
    if result.status == status.SUCCESS and services and not failed:
        return Delivery(True, None, latency, channels)
    if result.status == status.NOMATCH or not services:
        detail = "; ".join(entry.message for entry in result.call_logs())
        error = "no channel matched" + (f" tag {target.tag!r}" if target.tag else "")
        return Delivery(False, _error_text(f"{error}: {detail}" if detail else error), latency)
    reasons = []
    for service in failed:
        messages = [entry.message for entry in service.logs()] or [service.status.name.lower()]
        reasons.append(f"{service.name}: {' '.join(messages)}")
    return Delivery(False, _error_text("; ".join(reasons)), latency, channels)


# -- deliveries in flight --------------------------------------------------------------


@dataclass(eq=False)
class InFlight:
    """One delivery handed to the pool: what it delivers, where, and since when."""

    channel: str
    #: what the dispatcher needs to record the outcome (its claim)
    claim: Any
    #: the dispatcher's clock when the delivery started
    at: datetime
    #: monotonic start and deadline
    started: float
    deadline: float
    result: Delivery | None = None
    finished: float | None = None
    #: already recorded as a timeout (its answer, if one comes, settles it later)
    expired: bool = False

    def when(self, moment: float) -> datetime:
        """The dispatcher's clock at the monotonic `moment`."""
        return self.at + timedelta(seconds=moment - self.started)


class DeliveryPool:
    """At most `size` deliveries in flight, each in its own daemon thread, one per channel.

    Daemon threads, because a channel that hangs must not hold the process at exit.
    """

    def __init__(self, size: int, wake: threading.Event) -> None:
        self.size = size
        self._wake = wake
        self._lock = threading.Lock()
        self._jobs: dict[str, InFlight] = {}

    def free(self) -> int:
        """How many more deliveries may start now."""
        with self._lock:
            return self.size - len(self._jobs)

    def busy_channels(self) -> set[str]:
        """Channels with a delivery in flight (or a timed-out one not answered yet)."""
        with self._lock:
            return set(self._jobs)

    def unsettled(self) -> int:
        """Deliveries whose outcome has not been collected, timed-out ones left aside."""
        with self._lock:
            return sum(1 for job in self._jobs.values() if not job.expired)

    def next_deadline(self) -> float | None:
        """The monotonic time the next delivery in flight times out, if any."""
        with self._lock:
            deadlines = [job.deadline for job in self._jobs.values() if not job.expired]
        return min(deadlines, default=None)

    def submit(self, job: InFlight, work: Callable[[], Delivery]) -> None:
        """Run `work` in a new worker thread; its channel is busy until `collect` sees it end."""
        with self._lock:
            if job.channel in self._jobs or len(self._jobs) >= self.size:
                raise RuntimeError(f"no room for a delivery to channel {job.channel!r}")
            self._jobs[job.channel] = job
        threading.Thread(
            target=self._run, args=(job, work), name="dagwatch-alert-delivery", daemon=True
        ).start()

    def _run(self, job: InFlight, work: Callable[[], Delivery]) -> None:
        try:
            result = work()
        except Exception as exc:  # a bug in building the message fails this attempt only
            error = secrets.redact(f"{type(exc).__name__}: {exc}")
            result = Delivery(False, error, time.monotonic() - job.started)
        with self._lock:
            job.result, job.finished = result, time.monotonic()
        self._wake.set()

    def collect(self, now: float, *, cutoff: bool = False) -> tuple[list[InFlight], list[InFlight]]:
        """(deliveries that just timed out, deliveries that returned), as of monotonic `now`.

        A delivery that returned after its deadline is in both: it timed out (that is what
        its attempt records), then answered. With `cutoff` every delivery still in flight
        times out now (the dispatcher is stopping). Returned deliveries leave the pool.
        """
        with self._lock:
            timed_out = [
                job
                for job in self._jobs.values()
                if not job.expired
                and (cutoff or (job.finished or now) >= job.deadline)
                and not (job.finished is not None and job.finished < job.deadline)
            ]
            for job in timed_out:
                job.expired = True
            done = [job for job in self._jobs.values() if job.finished is not None]
            for job in done:
                del self._jobs[job.channel]
        return timed_out, done
