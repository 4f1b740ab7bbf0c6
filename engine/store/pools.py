"""Pools: named slot budgets, and how many of their slots task instances hold right now."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Row, Select, and_, case, func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from engine.exceptions import NotFound, StoreError
from engine.states import TaskState
from engine.store.db import upsert_insert
from engine.store.models import Pool, TaskInstance

DEFAULT_POOL = "default_pool"


@dataclass(frozen=True)
class PoolInfo:
    """A pool and its usage; occupied = running + queued (the states holding a slot)."""

    name: str
    slots: int
    description: str
    running_slots: int = 0
    queued_slots: int = 0
    scheduled_slots: int = 0

    @property
    def occupied_slots(self) -> int:
        return self.running_slots + self.queued_slots

    @property
    def open_slots(self) -> int:
        return self.slots - self.occupied_slots

    def as_row(self) -> dict[str, object]:
        return {
            "pool": self.name,
            "slots": self.slots,
            "running_slots": self.running_slots,
            "queued_slots": self.queued_slots,
            "scheduled_slots": self.scheduled_slots,
            "occupied_slots": self.occupied_slots,
            "open_slots": self.open_slots,
            "description": self.description,
        }


def _slots_in(state: TaskState) -> ColumnElement[int]:
    return func.coalesce(
        func.sum(case((TaskInstance.state == state.value, TaskInstance.pool_slots), else_=0)), 0
    )


def _pool_query(name: str | None = None) -> Select[str, int, str, int, int, int]:
    counted = (TaskState.RUNNING.value, TaskState.QUEUED.value, TaskState.SCHEDULED.value)
    query = (
        select(
            Pool.name,
            Pool.slots,
            Pool.description,
            _slots_in(TaskState.RUNNING).label("running_slots"),
            _slots_in(TaskState.QUEUED).label("queued_slots"),
            _slots_in(TaskState.SCHEDULED).label("scheduled_slots"),
        )
        .outerjoin(
            TaskInstance, and_(TaskInstance.pool == Pool.name, TaskInstance.state.in_(counted))
        )
        .group_by(Pool.name, Pool.slots, Pool.description)
        .order_by(Pool.name)
    )
    return query if name is None else query.where(Pool.name == name)


def _info(row: Row[str, int, str, int, int, int]) -> PoolInfo:
    return PoolInfo(
        name=row.name,
        slots=row.slots,
        description=row.description or "",
        running_slots=int(row.running_slots),
        queued_slots=int(row.queued_slots),
        scheduled_slots=int(row.scheduled_slots),
    )


def list_pools(session: Session) -> list[PoolInfo]:
    """Every pool with its usage, in one GROUP BY query."""
    return [_info(row) for row in session.execute(_pool_query())]


def get_pool(session: Session, name: str) -> PoolInfo:
    """One pool with its usage; NotFound when there is no such pool."""
    row = session.execute(_pool_query(name)).first()
    if row is None:
        raise NotFound(f"pool {name!r} does not exist")
    return _info(row)


def set_pool(session: Session, name: str, slots: int, description: str | None = None) -> PoolInfo:
    """Create the pool or change its slots (and its description, when one is given)."""
    if not name or not name.strip():
        raise StoreError("a pool needs a non-empty name")
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
        raise StoreError(f"pool {name!r}: slots must be an integer >= 0, not {slots!r}")
    changes: dict[str, object] = {"slots": slots}
    if description is not None:
        changes["description"] = description
    statement = (
        upsert_insert(session, Pool)
        .values(name=name, slots=slots, description=description or "")
        .on_conflict_do_update(index_elements=[Pool.name], set_=changes)
    )
    session.execute(statement)
    loaded = session.identity_map.get(identity_key(Pool, name))
    if loaded is not None:
        session.expire(loaded)
    return get_pool(session, name)


def delete_pool(session: Session, name: str) -> None:
    """Delete a pool; default_pool cannot be deleted (set its slots instead)."""
    if name == DEFAULT_POOL:
        raise StoreError(f"{DEFAULT_POOL} cannot be deleted; set its slots instead")
    pool = session.get(Pool, name)
    if pool is None:
        raise NotFound(f"pool {name!r} does not exist")
    session.delete(pool)
    session.flush()
