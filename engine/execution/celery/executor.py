"""The celery executor, on the scheduler's side: send attempts, learn when they end.

Each queued attempt gets a message id (`assign_external_ids`) that the scheduler commits
with the queued state; only then is the message sent, with that id as its Celery task
id, to the Celery queue named by the task's `queue=`. A worker runs it only if the task
instance is still queued under that id (`engine.execution.runner`), so a message the broker
delivers twice, or one replaced by a re-send, never starts a second attempt.

What happens to sent attempts is read from the metastore (one query by primary key for
all of them, every `poll_interval` while any is in flight), not from Celery:
- ended (any state past running): an event, so the scheduler looks at the run at once;
  the attempt's metrics are then fetched from the result backend and relayed to this
  process's backends;
- still queued `celery.requeue_timeout` seconds after it was sent (the broker lost the
  message, say a Redis restarted without persistence): the message id is swapped by a
  compare-and-set and the attempt sent again under the new id; the old message, if it
  ever arrives, is refused;
- running while its message has failed (checked every `lost_check_interval`, one read
  of the result backend for all of them): the pool process running it died (Celery's
  WorkerLostError, or its hard time limit killed it) and no outcome will come. A lost
  event: the scheduler fails it and retries it at once;
- running with a heartbeat older than `scheduler.heartbeat_timeout` (its whole worker
  died or hangs): it is let go, so the scheduler's zombie check fails it and retries it;
  the message is revoked in case the process still lives.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery import states
from celery.backends.base import KeyValueStoreBackend

from engine.execution.base import AttemptEvent, AttemptRequest, CallbackRequest
from engine.execution.celery.app import RUN_ATTEMPT, RUN_CALLBACKS, celery_app
from engine.execution.celery.relay import decode_metrics
from engine.states import TaskState
from engine.store import workers
from metrics import stats

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.db import Store

log = logging.getLogger(__name__)
#: the queue of a task that sets none (`BaseOperator(queue=...)`'s default)
TASK_DEFAULT_QUEUE = "default"


@dataclass
class _Sent:
    request: AttemptRequest
    sent_at: float  #: monotonic
    unsent: bool = False  #: the broker refused it: send again at the next poll


class CeleryExecutor:
    """Attempts run by `dagwatch worker` processes; this side only sends and watches."""

    name = "celery"
    #: seconds between reads of the in-flight attempts' states
    poll_interval = 0.2
    #: seconds between two tries to send a message the broker refused
    resend_backoff = 5.0
    #: seconds past `execution_timeout` before the worker kills the attempt's process
    hard_timeout_grace = 10.0
    #: seconds a result is waited for once its attempt ended (then its metrics are lost)
    result_wait = 30.0
    #: seconds between reads of the running attempts' results (a failed one: lost process)
    lost_check_interval = 1.0

    def __init__(self, config: Config, store: Store, parallelism: int | None = None) -> None:
        self.config = config
        self.store = store
        self.parallelism: int = parallelism or config["core.parallelism"]
        self.requeue_timeout: float = config["celery.requeue_timeout"]
        self.heartbeat_timeout: float = config["scheduler.heartbeat_timeout"]
        self.default_queue: str = config["celery.default_queue"]
        self.app: Any = None
        self._inflight: dict[int, _Sent] = {}
        self._results: dict[str, float] = {}  #: message id -> give up at (monotonic)
        self._events: list[AttemptEvent] = []
        self._last_poll = 0.0
        self._last_results = 0.0
        self._last_lost_check = 0.0
        self._ended = False
        self.resent = 0  #: messages sent again after requeue_timeout

    # -- the Executor protocol -------------------------------------------------------

    def start(self) -> None:
        if self.app is None:
            self.app = celery_app(self.config)

    def assign_external_ids(self, ti_ids: Sequence[int]) -> dict[int, str]:
        """A fresh message id per attempt, committed with its queued state."""
        return {ti_id: _new_id(ti_id) for ti_id in ti_ids}

    def queue(self, requests: Sequence[AttemptRequest]) -> None:
        if self._ended:
            raise RuntimeError("the celery executor has ended; it takes no more attempts")
        self.start()
        for request in requests:
            if request.external_id is None:  # queued by a caller that did not assign one
                reassigned = self._reassign(request, None)
                if reassigned is None:
                    continue
                request = reassigned
            sent = _Sent(request, time.monotonic())
            self._inflight[request.ti_id] = sent
            self._send(sent)

    def queue_callbacks(self, requests: Sequence[CallbackRequest]) -> None:
        self.start()
        for request in requests:
            message_id = f"dagwatch-callback-{uuid.uuid4().hex}"
            try:
                self.app.send_task(
                    RUN_CALLBACKS,
                    args=[asdict(request)],
                    task_id=message_id,
                    queue=self.default_queue,
                    retry=True,
                )
                self._results[message_id] = time.monotonic() + self.result_wait
            except Exception as exc:  # the broker is down: the callbacks are not run
                log.error(
                    "could not send %s of %s/%s to the broker: %s",
                    request.kind, request.dag_id, request.run_id, exc,
                )  # fmt: skip

    def wait(self, timeout: float) -> bool:
        until = time.monotonic() + timeout
        while True:
            self._poll(force=True)
            if self._events:
                return True
            remaining = until - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self.poll_interval, remaining))

    def collect(self) -> list[AttemptEvent]:
        self._poll()
        events, self._events = self._events, []
        return events

    def running_ti_ids(self) -> set[int]:
        return set(self._inflight)

    def terminate(self, ti_ids: Sequence[int], reason: str) -> None:
        """Revoke the messages: a worker that has not started one drops it; one running it
        SIGTERMs the attempt, which records the failure."""
        ids = [s.request.external_id for t in ti_ids if (s := self._inflight.get(t))]
        if not ids or self.app is None:
            return
        log.info("stopping %d attempt(s): %s", len(ids), reason)
        try:
            self.app.control.revoke(ids, terminate=True, signal="SIGTERM")
        except Exception as exc:
            log.error("could not revoke %d message(s): %s", len(ids), exc)

    @property
    def open_slots(self) -> int:
        return max(0, self.parallelism - len(self._inflight))

    def end(self, grace: float) -> None:
        """Attempts go on in the workers and record their outcomes themselves; queued ones
        are reset by the next scheduler's start-up and sent again (the old messages are
        then refused)."""
        self._ended = True
        if self.app is not None:
            self._fetch_results(force=True)
            self.app.close()

    # -- watching --------------------------------------------------------------------

    def _send(self, sent: _Sent) -> None:
        request = sent.request
        options: dict[str, Any] = {"queue": self.celery_queue(request.queue)}
        if request.execution_timeout:
            options["time_limit"] = request.execution_timeout + self.hard_timeout_grace
        try:
            self.app.send_task(
                RUN_ATTEMPT, args=[asdict(request)], task_id=request.external_id, retry=True,
                **options,
            )  # fmt: skip
            sent.unsent = False
        except Exception as exc:  # the broker is down: try again at a later poll
            sent.unsent = True
            log.error("could not send task instance %s to the broker: %s", request.ti_id, exc)
        sent.sent_at = time.monotonic()

    def celery_queue(self, queue: str | None) -> str:
        """A task's `queue=` as a Celery queue: unset (the engine's "default") is
        `celery.default_queue`."""
        return queue if queue and queue != TASK_DEFAULT_QUEUE else self.default_queue

    def _reassign(self, request: AttemptRequest, old: str | None) -> AttemptRequest | None:
        """The request under a new message id, swapped in by compare-and-set; None when the
        attempt is no longer queued under `old` (it started, or someone re-queued it)."""
        new = _new_id(request.ti_id)
        with self.store.session() as session:
            if not workers.swap_external_id(session, request.ti_id, old, new):
                return None
        return replace(request, external_id=new)

    def _poll(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._inflight and not self._results:
            return
        if not force and now - self._last_poll < self.poll_interval:
            return
        self._last_poll = now
        if self._inflight:
            with self.store.session(readonly=True) as session:
                rows = workers.attempt_rows(session, list(self._inflight))
            self._update(rows, now)
        self._fetch_results()

    def _update(self, rows: list[workers.AttemptRow], now: float) -> None:
        seen = set()
        running: list[tuple[_Sent, workers.AttemptRow]] = []
        stale_before = datetime.now(UTC) - timedelta(seconds=self.heartbeat_timeout)
        for row in rows:
            seen.add(row.id)
            sent = self._inflight[row.id]
            ours = row.external_executor_id == sent.request.external_id
            if row.state is TaskState.QUEUED and ours:
                self._maybe_resend(sent, now)
            elif row.state is TaskState.RUNNING and ours:
                if row.last_heartbeat is not None and row.last_heartbeat < stale_before:
                    log.warning(
                        "task instance %s: no heartbeat for %g s; its worker is gone or stuck",
                        row.id, self.heartbeat_timeout,
                    )  # fmt: skip
                    del self._inflight[row.id]  # the scheduler's zombie check takes it
                    self.terminate_message(sent.request.external_id)
                else:
                    running.append((sent, row))
            elif row.state in (TaskState.QUEUED, TaskState.RUNNING):
                del self._inflight[row.id]  # another message carries it now
            else:
                del self._inflight[row.id]
                # a sent request has its message id
                self._results[sent.request.external_id] = now + self.result_wait  # type: ignore[index]
                request = sent.request
                self._events.append(
                    AttemptEvent(
                        request.ti_id, request.dag_id, request.run_id, request.task_id,
                        row.state, None, None, row.pid,
                    )
                )  # fmt: skip
        for ti_id in set(self._inflight) - seen:  # deleted with its run
            del self._inflight[ti_id]
        self._check_lost(running, now)

    def _check_lost(self, running: list[tuple[_Sent, workers.AttemptRow]], now: float) -> None:
        """Report lost the running attempts whose message failed: the process running it is
        gone without recording an outcome (a successful message always recorded one)."""
        if not running or now - self._last_lost_check < self.lost_check_interval:
            return
        self._last_lost_check = now
        try:
            ids = [sent.request.external_id for sent, _ in running if sent.request.external_id]
            failed = failed_messages(self.app, ids)
        except Exception as exc:  # the result backend is down: the heartbeats still tell
            log.warning("could not read the results of running attempts: %s", exc)
            return
        for sent, row in running:
            error = failed.get(sent.request.external_id or "")
            if error is None:
                continue
            del self._inflight[row.id]
            request = sent.request
            reason = f"attempt lost: the worker process running it ended ({error})"
            log.warning("task instance %s: %s", row.id, reason)
            self._events.append(
                AttemptEvent(
                    request.ti_id, request.dag_id, request.run_id, request.task_id,
                    None, None, reason, row.pid,
                )
            )  # fmt: skip

    def _maybe_resend(self, sent: _Sent, now: float) -> None:
        if sent.unsent:
            if now - sent.sent_at >= self.resend_backoff:
                self._send(sent)
            return
        if now - sent.sent_at < self.requeue_timeout:
            return
        old = sent.request.external_id
        request = self._reassign(sent.request, old)
        if request is None:
            return  # it started meanwhile: the next poll sees it running
        log.warning(
            "task instance %s was not started %g s after its message %s was sent; "
            "sending it again as %s",
            request.ti_id, self.requeue_timeout, old, request.external_id,
        )  # fmt: skip
        self.resent += 1
        sent.request = request
        self._send(sent)
        self.terminate_message(old, terminate=False)

    def terminate_message(self, message_id: str | None, *, terminate: bool = True) -> None:
        """Revoke one message (best effort: a dead worker hears nothing)."""
        if message_id is None or self.app is None:
            return
        try:
            self.app.control.revoke(message_id, terminate=terminate, signal="SIGTERM")
        except Exception as exc:
            log.warning("could not revoke message %s: %s", message_id, exc)

    def _fetch_results(self, *, force: bool = False) -> None:
        """Relay the metrics of ended attempts (and callbacks) from the result backend."""
        now = time.monotonic()
        if not self._results or (not force and now - self._last_results < 1.0):
            return
        self._last_results = now
        for message_id, give_up in list(self._results.items()):
            try:
                result = self.app.AsyncResult(message_id)
                if not result.ready():
                    if now >= give_up:
                        log.debug("no result for message %s; its metrics are lost", message_id)
                        del self._results[message_id]
                    continue
                value = result.result  # read once ready() cached it: one round trip
            except Exception as exc:  # the result backend is down: metrics are lost
                log.warning("could not read the result of message %s: %s", message_id, exc)
                del self._results[message_id]
                continue
            del self._results[message_id]
            if isinstance(value, dict):
                stats.replay(decode_metrics(value.get("metrics") or []))


def failed_messages(app: Any, message_ids: Sequence[str]) -> dict[str, str]:
    """{message id: its error} for the messages whose result says they failed: one read
    of a key-value result backend (Redis) for all of them, else one per message."""
    backend = app.backend
    key_for = getattr(backend, "get_key_for_task", None)
    if key_for is not None and type(backend).mget is not KeyValueStoreBackend.mget:
        values = backend.mget([key_for(message_id) for message_id in message_ids])
        metas = [backend.decode_result(value) if value else None for value in values]
    else:
        metas = [backend.get_task_meta(message_id) for message_id in message_ids]
    failed = {}
    for message_id, meta in zip(message_ids, metas, strict=True):
        if meta and meta.get("status") == states.FAILURE:
            exc = meta.get("result")
            failed[message_id] = f"{type(exc).__name__}: {exc}" if exc else "failed"
    return failed


def _new_id(ti_id: int) -> str:
    return f"dagwatch-{ti_id}-{uuid.uuid4().hex}"
