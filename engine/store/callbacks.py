"""Callback requests kept in the metastore until they ran (at-least-once callbacks).

The scheduler writes a request in the transaction of its cause (a run ended, an SLA was
missed, a zombie failed) and hands it to its executor once that has committed; the
process that runs the callbacks marks it done. A scheduler that dies in between leaves
it pending: the next scheduler to start (or any scheduler's housekeeping) hands pending
requests of dead schedulers to its own executor again. A callback may so run twice
(its process was still running when the scheduler died); `AppriseNotifier` writes one
outbox row per occurrence, so its page is not repeated.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import event, insert, select, update
from sqlalchemy.orm import Session

from engine import supervision
from engine.store.models import CallbackRequest, Job

PENDING = "pending"
DONE = "done"
#: Pending requests looked at per pass.
ORPHAN_BATCH = 500


def add(session: Session, requests: Sequence[Any], now: datetime, job_id: int | None) -> list[int]:
    """Write pending rows for these requests (objects with dag_id, run_id, task_id,
    map_index, kind, fileloc and reason); their ids, in order."""
    ids = []
    for request in requests:
        ids.append(
            session.execute(
                insert(CallbackRequest)
                .values(
                    dag_id=request.dag_id,
                    run_id=request.run_id,
                    task_id=request.task_id,
                    map_index=request.map_index,
                    kind=request.kind,
                    fileloc=request.fileloc,
                    reason=request.reason,
                    state=PENDING,
                    created_at=now,
                    queued_by=job_id,
                    attempts=1,
                )
                .returning(CallbackRequest.id)
            ).scalar_one()
        )
    return ids


def on_commit(session: Session, action: Callable[[], None]) -> None:
    """Run `action` once the session's transaction has committed (never if it rolls back)."""
    event.listen(session, "after_commit", lambda _: action(), once=True)


def finish(session: Session, request_id: int, now: datetime) -> None:
    """The request's callbacks ran (whatever their outcome, recorded in `callback`)."""
    session.execute(
        update(CallbackRequest)
        .where(CallbackRequest.id == request_id)
        .values(state=DONE, done_at=now)
    )


def job_gone(job: Job | None, cutoff: datetime, host: str | None = None) -> bool:
    """The job can no longer run what it was handed: ended, silent since `cutoff`, or a
    process of this host that is not there any more."""
    if job is None or job.state != "running" or job.latest_heartbeat < cutoff:
        return True
    return job.hostname == (host or socket.getfqdn()) and not supervision.pid_alive(job.pid)


def orphans(
    session: Session, gone: Callable[[Job | None], bool], own_job: int | None
) -> list[CallbackRequest]:
    """Pending requests handed to a scheduler that is gone (oldest first, one batch)."""
    rows = list(
        session.scalars(
            select(CallbackRequest)
            .where(CallbackRequest.state == PENDING)
            .order_by(CallbackRequest.created_at, CallbackRequest.id)
            .limit(ORPHAN_BATCH)
        )
    )
    job_ids = {row.queued_by for row in rows if row.queued_by is not None} - {own_job}
    jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(sorted(job_ids))))}
    return [
        row
        for row in rows
        if row.queued_by != own_job or own_job is None
        if gone(jobs.get(row.queued_by) if row.queued_by is not None else None)
    ]


def adopt(session: Session, request_ids: Sequence[int], job_id: int | None) -> None:
    """These requests are handed to `job_id`'s executor again."""
    if request_ids:
        session.execute(
            update(CallbackRequest)
            .where(CallbackRequest.id.in_(list(request_ids)), CallbackRequest.state == PENDING)
            .values(queued_by=job_id, attempts=CallbackRequest.attempts + 1)
        )
