"""`dagwatch worker`: a Celery worker that runs attempts with the local executor's runner.

The worker process consumes the given Celery queues with a prefork pool of
`concurrency` processes. Each pool process opens its own metastore connections, keeps
the DAG files it imported (a `DagCache`), is the subreaper of what its attempts start
(so nothing an attempt started outlives it), and runs each attempt with
`engine.execution.runner.run_attempt`: timeouts, heartbeats, logs, XComs and callbacks are the
local executor's. Metrics the attempt emits are buffered (`install_relay`) and returned
as the Celery result; the scheduler that sent the attempt replays them into its
backends, so dashboards see one set of series whatever the number of workers.

A message is run only if its task instance is still queued under that message's id;
anything else (a redelivered copy, a message replaced by a re-send) is acknowledged and
dropped with a log line. The worker's main process writes a heartbeat row (`worker`
table) every few seconds with the attempts it runs per queue: `/metrics`, `/health` and
the console read slots from there.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine import runtime
from engine.execution import reaper, runner
from engine.execution.attempt import (
    DagCache,
    StopHandler,
    config_from_payload,
    config_payload,
    extend_sys_path,
    hostname,
    run_callback_request,
    run_here,
)
from engine.execution.base import AttemptRequest, CallbackRequest
from engine.execution.celery.app import RUN_ATTEMPT, RUN_CALLBACKS, celery_app
from engine.execution.celery.relay import encode_metrics
from engine.observability.child_metrics import install_relay
from engine.states import TaskState
from engine.store import workers
from engine.store.db import Store

if TYPE_CHECKING:
    from engine.config import Config

log = logging.getLogger(__name__)

#: DAG files (versions) a pool process keeps imported
DAG_CACHE_FILES = 8
#: what the worker's main process hands the pool processes it forks
_PAYLOAD: dict[str, Any] = {}
#: (pid, config, store, cache) of this pool process, built at its first task
_PROCESS: dict[str, Any] = {}


class _NoReasons:
    """StopHandler's source of reasons: a revoke carries none."""

    def poll(self) -> bool:
        return False

    def recv(self) -> str:  # pragma: no cover - never called: poll() is False
        return ""


def _process() -> tuple[Any, Store, DagCache]:
    """This pool process's config, metastore and DAG cache (never the parent's)."""
    if _PROCESS.get("pid") != os.getpid():
        runtime.detach_after_fork()  # the worker's: its heartbeat goes on using them
        config = config_from_payload(_PAYLOAD["config"])
        store = Store.from_config(config)
        runtime.configure(config, store)
        extend_sys_path(config)
        reaper.become_subreaper()
        _PROCESS.update(
            pid=os.getpid(), config=config, store=store, cache=DagCache(DAG_CACHE_FILES)
        )
    return _PROCESS["config"], _PROCESS["store"], _PROCESS["cache"]


def run_attempt_message(message_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The body of `dagwatch.run_attempt`: run one attempt unless the message is stale."""
    request = AttemptRequest(**fields)
    config, store, cache = _process()
    relay = install_relay(config)
    with store.session(readonly=True) as session:
        state, current = workers.current_external_id(session, request.ti_id)
    if state != TaskState.QUEUED.value or current != message_id:
        log.info(
            "message %s for task instance %s dropped: it is %s with message %s",
            message_id, request.ti_id, state or "gone", current,
        )  # fmt: skip
        return {"state": None, "stale": True, "metrics": []}
    stop = StopHandler(_NoReasons())
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        # what fails outside the task fails the Celery task: its executor reports it lost
        ran = run_here(
            store, config, request, cache.load, external_id=message_id,
            end_processes=reaper.end_attempt_processes, on_moved=stop.stop_self, contain=(),
        )  # fmt: skip
    except runner.StaleMessage as exc:
        log.info("message %s dropped: %s", message_id, exc)
        return {"state": None, "stale": True, "metrics": []}
    finally:
        stop.cancel()
        signal.signal(signal.SIGTERM, previous)
    return {
        "state": ran.state.value if ran.state else None,
        "error": ran.error,
        "metrics": encode_metrics(relay.drain()),
    }


def run_callbacks_message(fields: dict[str, Any]) -> dict[str, Any]:
    """The body of `dagwatch.run_callbacks`."""
    config, store, cache = _process()
    relay = install_relay(config)
    run_callback_request(store, config, CallbackRequest(**fields), cache)
    return {"metrics": encode_metrics(relay.drain())}


def worker_app(config: Config) -> Any:
    """The Celery app with dagwatch's two tasks registered."""
    app = celery_app(config)

    @app.task(name=RUN_ATTEMPT, bind=True, acks_late=True)
    def run_attempt(task: Any, fields: dict[str, Any]) -> dict[str, Any]:
        return run_attempt_message(task.request.id, fields)

    @app.task(name=RUN_CALLBACKS, acks_late=True)
    def run_callbacks(fields: dict[str, Any]) -> dict[str, Any]:
        return run_callbacks_message(fields)

    return app


def running_by_queue() -> dict[str, int]:
    """Attempts this worker runs now, by queue (its main process's view)."""
    from celery.worker import state

    counts: Counter[str] = Counter()
    for request in list(state.active_requests):
        if getattr(request, "name", None) != RUN_ATTEMPT:
            continue
        info = getattr(request, "delivery_info", None) or {}
        counts[info.get("routing_key") or "?"] += 1
    return dict(counts)


class Heartbeat:
    """Writes the worker's row every `interval` seconds from a daemon thread."""

    def __init__(self, store: Store, worker_id: int, interval: float) -> None:
        self.store, self.worker_id, self.interval = store, worker_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dagwatch-worker-heartbeat")
        self._thread.daemon = True

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.store.session() as session:
                    workers.heartbeat_worker(
                        session, self.worker_id, datetime.now(UTC), running_by_queue()
                    )
            except Exception as exc:  # a missed beat is logged; the next one may pass
                log.warning("worker heartbeat failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + 1)


def run_worker(
    config: Config, store: Store, *, queues: Sequence[str], concurrency: int, name: str | None
) -> int:
    """Run the worker until SIGTERM/SIGINT (warm shutdown: running attempts finish)."""
    _PAYLOAD["config"] = config_payload(config)
    app = worker_app(config)
    node = name or f"dagwatch-{os.getpid()}@{hostname()}"
    now = datetime.now(UTC)
    with store.session() as session:
        worker_id = workers.start_worker(
            session, name=node, hostname=hostname(), pid=os.getpid(), queues=queues,
            concurrency=concurrency, now=now,
        )  # fmt: skip
    heartbeat = Heartbeat(store, worker_id, runner.heartbeat_interval(config))
    heartbeat.start()
    state = "failed"
    try:
        worker = app.Worker(
            hostname=node,
            queues=list(queues),
            concurrency=concurrency,
            pool="prefork",
            loglevel=config["logging.level"],
            without_gossip=True,
            without_mingle=True,
            optimization="fair",
        )
        worker.start()
        state = "success" if not worker.exitcode else "failed"
        return worker.exitcode or 0
    finally:
        heartbeat.stop()
        try:
            with store.session() as session:
                workers.end_worker(session, worker_id, state, datetime.now(UTC))
        except Exception as exc:
            log.error("could not record the worker's end: %s", exc)
