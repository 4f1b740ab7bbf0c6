"""The Celery application both sides build from the same configuration.

The choices that keep an attempt from being lost or run twice (see docs/deployment.md):

- `task_acks_late`: a message is acknowledged once its task returned, so one a worker
  took but had not finished when it died goes back to the queue (RabbitMQ: at once,
  when the worker's connection drops; Redis: after `celery.visibility_timeout`).
- `worker_prefetch_multiplier = 1`: a worker holds at most one message per free slot,
  so a dying worker takes few messages with it and a busy one starves no other.
- A redelivered or duplicated message is harmless: the worker starts an attempt only
  if its task instance is still queued under that message's id (`external_executor_id`,
  committed with the queued state), in the transaction that moves it to running.
- Results carry each attempt's metrics back to the scheduler (relayed to its backends),
  nothing else: the outcome is in the metastore, written by the runner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery import Celery

if TYPE_CHECKING:
    from engine.config import Config

#: the Celery task names
RUN_ATTEMPT = "dagwatch.run_attempt"
RUN_CALLBACKS = "dagwatch.run_callbacks"
#: seconds the broker connection is retried before a send gives up (the scheduler loop
#: must not block on a broker that is down: the attempt is re-sent later)
SEND_RETRY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}
#: seconds a worker's result (the attempt's metrics) is kept in the result backend: the
#: scheduler reads it within seconds, and it expires instead of costing a delete
RESULT_EXPIRES = 600


def celery_app(config: Config) -> Celery:
    """A Celery app configured from `celery.*`; the worker registers the tasks on it."""
    app = Celery("dagwatch", set_as_current=False)
    app.conf.update(
        broker_url=config["celery.broker_url"],
        result_backend=config["celery.result_backend"],
        task_default_queue=config["celery.default_queue"],
        task_acks_late=True,
        # the scheduler retries a lost attempt instead: it reads the message's failure
        # (WorkerLostError) in the result backend, or the heartbeat of a dead worker stops
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": config["celery.visibility_timeout"]},
        result_expires=RESULT_EXPIRES,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_publish_retry_policy=SEND_RETRY,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=5,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=True,  # revoke: stopping attempts
        task_track_started=False,
        result_extended=False,
    )
    return app
