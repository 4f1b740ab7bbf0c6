"""The SQL of the Celery executor and its workers: message ids of queued attempts, the
states of attempts in flight, and each worker's heartbeat and slots.

Every change of a task instance here is a compare-and-set on its state (and on the
message id it expects), so a scheduler and a worker that race cannot both win.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from engine.states import TaskState
from engine.store.db import affected_rows
from engine.store.models import TaskInstance, Worker

_TI = TaskInstance.__table__
#: rows read per statement (bound parameters stay below every backend's limit)
CHUNK = 500


def record_external_ids(session: Session, ids: Mapping[int, str]) -> None:
    """Write each queued task instance's message id (one batched statement), in the
    transaction that queues it: a message is sent only once its id is committed."""
    if not ids:
        return
    statement = (
        update(_TI)
        .where(_TI.c.id == bindparam("ti_id"), _TI.c.state == TaskState.QUEUED.value)
        .values(external_executor_id=bindparam("external_id"))
    )
    rows = [{"ti_id": ti_id, "external_id": value} for ti_id, value in ids.items()]
    session.connection().execute(statement, rows)


def swap_external_id(session: Session, ti_id: int, old: str | None, new: str) -> bool:
    """queued with message `old` → queued with message `new` (a re-send); False when the
    attempt started, ended or was re-queued meanwhile."""
    result = session.execute(
        update(_TI)
        .where(
            _TI.c.id == ti_id,
            _TI.c.state == TaskState.QUEUED.value,
            _TI.c.external_executor_id == old,
        )
        .values(external_executor_id=new)
    )
    return affected_rows(result) == 1


def current_external_id(
    session: Session, ti_id: int, *, lock: bool = False
) -> tuple[str, str | None]:
    """(state, message id) of a task instance; `lock` holds the row (PostgreSQL) until the
    transaction ends, so the attempt that checked it is the one that starts."""
    statement = select(TaskInstance.state, TaskInstance.external_executor_id).where(
        TaskInstance.id == ti_id
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    row = session.execute(statement).first()
    return (row.state, row.external_executor_id) if row else ("", None)


@dataclass(frozen=True)
class AttemptRow:
    """What the executor needs to know about an attempt it sent."""

    id: int
    state: TaskState
    pid: int | None
    last_heartbeat: datetime | None
    external_executor_id: str | None


def attempt_rows(session: Session, ti_ids: Sequence[int]) -> list[AttemptRow]:
    """The task instances `ti_ids` (by primary key, in chunks)."""
    rows: list[AttemptRow] = []
    ids = list(ti_ids)
    for start in range(0, len(ids), CHUNK):
        statement = select(
            _TI.c.id, _TI.c.state, _TI.c.pid, _TI.c.last_heartbeat, _TI.c.external_executor_id
        ).where(_TI.c.id.in_(ids[start : start + CHUNK]))
        rows += [
            AttemptRow(r.id, TaskState(r.state), r.pid, r.last_heartbeat, r.external_executor_id)
            for r in session.execute(statement)
        ]
    return rows


# -- workers -----------------------------------------------------------------------


def start_worker(
    session: Session,
    *,
    name: str,
    hostname: str,
    pid: int,
    queues: Sequence[str],
    concurrency: int,
    now: datetime,
) -> int:
    """Register a worker (a restarted one with the same name takes its row over)."""
    row = session.scalars(select(Worker).where(Worker.name == name)).first()
    if row is None:
        row = Worker(name=name)
        session.add(row)
    row.hostname, row.pid, row.queues = hostname, pid, ",".join(queues)
    row.concurrency, row.running, row.state = concurrency, {}, "running"
    row.start_date = row.latest_heartbeat = now
    row.end_date = None
    session.flush()
    return row.id


def heartbeat_worker(
    session: Session, worker_id: int, now: datetime, running: dict[str, int]
) -> None:
    session.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(latest_heartbeat=now, running=running, state="running")
    )


def end_worker(session: Session, worker_id: int, state: str, now: datetime) -> None:
    session.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(state=state, end_date=now, latest_heartbeat=now, running={})
    )


def live_workers(session: Session, since: datetime) -> list[Worker]:
    """Running workers whose heartbeat is not older than `since` (index on state, heartbeat)."""
    statement = (
        select(Worker)
        .where(Worker.state == "running", Worker.latest_heartbeat >= since)
        .order_by(Worker.name)
    )
    return list(session.scalars(statement))


def queued_by_queue(session: Session) -> dict[str, tuple[int, datetime | None]]:
    """{queue: (task instances queued, the oldest queued_at)}: the broker's backlog as the
    metastore knows it (index on state)."""
    statement = (
        select(TaskInstance.queue, func.count(), func.min(TaskInstance.queued_at))
        .where(TaskInstance.state == TaskState.QUEUED.value)
        .group_by(TaskInstance.queue)
    )
    return {queue: (count, oldest) for queue, count, oldest in session.execute(statement)}
