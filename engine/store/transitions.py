"""The single write path for task-instance and DAG-run states.

Every state change is a compare-and-set (`UPDATE ... WHERE state = :expected`), checked
against the state machines of `engine.states`, recorded as a `StateTransition` row and
announced to the transition listeners, all in the caller's transaction. Nothing else in
dagwatch may assign `TaskInstance.state` or `DagRun.state` directly. A reason can quote a
task's error: listeners get it with the secrets this process knows masked.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ClauseElement, bindparam, insert, inspect, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_state, set_committed_value
from sqlalchemy.orm.util import identity_key

from engine import masking
from engine.exceptions import IllegalTransition, StoreError, TransitionConflict
from engine.states import (
    DAG_RUN_TRANSITIONS,
    TASK_TRANSITIONS,
    DagRunState,
    TaskState,
    dag_run_transition_allowed,
    task_transition_allowed,
)
from engine.store.models import DagRun, StateTransition, TaskInstance

#: Core tables: the UPDATE and INSERT here skip the ORM's bulk machinery, which cost
#: about a sixth of an attempt's CPU (bench/attempt_cpu.py); `_sync` updates loaded
#: objects itself.
_TASK_INSTANCES = TaskInstance.__table__
_TASK_INSTANCE_KEYS = tuple(
    _TASK_INSTANCES.c[name]
    for name in ("id", "dag_id", "run_id", "task_id", "map_index", "try_number")
)
_DAG_RUNS = DagRun.__table__
_TRANSITIONS = StateTransition.__table__
TASK_INSTANCE = "task_instance"
DAG_RUN = "dag_run"
#: Ids per UPDATE: far below SQLite's (32766) and PostgreSQL's (65535) parameter limits.
CHUNK_SIZE = 500


@dataclass(frozen=True)
class TransitionEvent:
    """One state change, as listeners see it (and as the state_transition row records it)."""

    entity: str  # task_instance | dag_run
    dag_id: str
    run_id: str
    task_id: str | None
    map_index: int | None
    try_number: int | None
    from_state: str
    to_state: str
    at: datetime
    reason: str | None
    entity_id: int | None = None  # TaskInstance.id or DagRun.id


TransitionListener = Callable[[Session, list[TransitionEvent]], None]
_listeners: list[TransitionListener] = []
_listeners_lock = threading.Lock()


def add_transition_listener(callback: TransitionListener) -> None:
    """Call `callback(session, events)` after every transition, inside its transaction.

    A listener that raises rolls the transition back (and the exception propagates), so a
    listener writing an outbox row either succeeds with the transition or not at all.
    A listener with a `wants(entity, to_state, reason) -> bool` method is called only for
    the transitions it wants: the others skip the savepoint that undoes a failing listener
    (two round trips each on PostgreSQL, four per attempt).
    """
    with _listeners_lock:
        if callback not in _listeners:
            _listeners.append(callback)


def remove_transition_listener(callback: TransitionListener) -> None:
    """Stop calling `callback`; unknown callbacks are ignored."""
    with _listeners_lock:
        if callback in _listeners:
            _listeners.remove(callback)


def guard_state_writes(session: Session, _flush_context: Any, _instances: Any) -> None:
    """A `before_flush` hook: refuse ORM writes of `.state` that bypass this module.

    `Store` installs it on its sessions, so `ti.state = "success"` fails loudly instead of
    skipping the state machine, the event row and the listeners. Inserting new rows with an
    initial state is fine.
    """
    for obj in session.dirty:
        if isinstance(obj, TaskInstance | DagRun) and instance_state(obj).attrs.state.history.added:
            entity = TASK_INSTANCE if isinstance(obj, TaskInstance) else DAG_RUN
            raise StoreError(
                f"{entity.replace('_', ' ')} {obj.id}: state {obj.state!r} was assigned directly; "
                "change states with engine.store.transitions"
            )


def _illegal(entity: str, expected: str, to: str, allowed: frozenset[Any]) -> IllegalTransition:
    allowed_text = ", ".join(sorted(str(state) for state in allowed)) or "(none)"
    name = entity.replace("_", " ")
    return IllegalTransition(
        f"{name}: {expected} -> {to} is not allowed; allowed from: {allowed_text}"
    )


def _check_aware(at: datetime) -> None:
    if at.tzinfo is None:
        raise ValueError(f"transition time {at!r} is naive; use an aware UTC datetime")


def _masked(reason: str | None) -> str | None:
    """The reason as listeners and the event row see it: secrets of this process masked
    (an alert payload quotes it; the column masks too, for any other writer)."""
    return masking.redact(reason) if reason else reason


def _extra_values(model: type[Any], values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Other columns to set with the state (start_date, try_number, ...); never id or state."""
    values = dict(values or {})
    columns = set(inspect(model).columns.keys()) - {"id", "state"}
    unknown = sorted(set(values) - columns)
    if unknown:
        raise ValueError(f"{model.__tablename__} has no settable column(s) {', '.join(unknown)}")
    return values


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), CHUNK_SIZE):
        yield ids[start : start + CHUNK_SIZE]


def _sync(session: Session, model: type[Any], ids: Sequence[int], values: dict[str, Any]) -> None:
    """Bring ORM objects already loaded in the session up to date with the UPDATE."""
    for row_id in ids:
        obj = session.identity_map.get(identity_key(model, row_id))
        if obj is None:
            continue
        for key, value in values.items():
            if isinstance(value, ClauseElement):  # computed in SQL: reload on next access
                session.expire(obj, [key])
            else:
                set_committed_value(obj, key, value)


def _wanting(entity: str, to: str, reason: str | None) -> list[TransitionListener]:
    """The listeners that want this transition (one without `wants` wants them all)."""
    with _listeners_lock:
        listeners = list(_listeners)
    return [
        listener
        for listener in listeners
        if (wants := getattr(listener, "wants", None)) is None or wants(entity, to, reason)
    ]


def _guarded(session: Session, listeners: list[TransitionListener]) -> Any:
    """A savepoint when a listener will run: a failing one then undoes this transition even
    if the caller goes on. Without listeners a failure can only be the database's, which
    the caller's transaction rolls back as a whole."""
    return session.begin_nested() if listeners else contextlib.nullcontext()


def _record(
    session: Session, events: list[TransitionEvent], listeners: list[TransitionListener]
) -> None:
    if not events:
        return
    rows = [{k: v for k, v in asdict(event).items() if k != "entity_id"} for event in events]
    session.execute(insert(_TRANSITIONS), rows)
    for listener in listeners:
        listener(session, list(events))


def _task_update(extra: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The UPDATE of a task-instance transition setting `extra` too, and its parameters.

    Built once per set of columns (`_update_setting`): building it anew for every
    transition, and computing its cache key, cost more than running it. Values computed
    in SQL (`TaskInstance.try_number + 1`) go into a statement of their own."""
    if any(isinstance(value, ClauseElement) for value in extra.values()):
        return _build_update(extra), {}
    statement = _update_setting(tuple(sorted(extra)))
    return statement, {f"set_{name}": value for name, value in extra.items()}


@functools.lru_cache(maxsize=128)
def _update_setting(columns: tuple[str, ...]) -> Any:
    return _build_update({name: bindparam(f"set_{name}") for name in columns})


def _build_update(values: dict[str, Any]) -> Any:
    return (
        update(_TASK_INSTANCES)
        .where(
            _TASK_INSTANCES.c.id.in_(bindparam("ids", expanding=True)),
            _TASK_INSTANCES.c.state == bindparam("expected"),
        )
        .values(state=bindparam("to"), **values)
        .returning(*_TASK_INSTANCE_KEYS)
    )


def transition_task_instances(
    session: Session,
    ti_ids: Sequence[int],
    *,
    expected: TaskState,
    to: TaskState,
    at: datetime,
    reason: str | None = None,
    values: Mapping[str, Any] | None = None,
) -> list[int]:
    """Move every listed task instance that is in `expected` to `to`; returns the changed ids.

    Rows in another state (changed by someone else meanwhile) are left alone.
    """
    expected, to = TaskState(expected), TaskState(to)
    if not task_transition_allowed(expected, to):
        raise _illegal(TASK_INSTANCE, expected, to, TASK_TRANSITIONS[to])
    _check_aware(at)
    reason = _masked(reason)
    extra = _extra_values(TaskInstance, values)
    ids = list(dict.fromkeys(ti_ids))
    if not ids:
        return []
    changed: list[int] = []
    statement, params = _task_update(extra)
    listeners = _wanting(TASK_INSTANCE, to.value, reason)
    with _guarded(session, listeners):
        events: list[TransitionEvent] = []
        for chunk in _chunks(ids):
            params.update(ids=list(chunk), expected=expected.value, to=to.value)
            result = session.execute(statement, params)
            for row in result:
                changed.append(row.id)
                events.append(
                    TransitionEvent(
                        entity=TASK_INSTANCE,
                        dag_id=row.dag_id,
                        run_id=row.run_id,
                        task_id=row.task_id,
                        map_index=row.map_index,
                        try_number=row.try_number,
                        from_state=expected.value,
                        to_state=to.value,
                        at=at,
                        reason=reason,
                        entity_id=row.id,
                    )
                )
        _sync(session, TaskInstance, changed, {"state": to.value, **extra})
        _record(session, events, listeners)
    return changed


def transition_task_instance(
    session: Session,
    ti_id: int,
    *,
    expected: TaskState,
    to: TaskState,
    at: datetime,
    reason: str | None = None,
    **values: Any,
) -> None:
    """Move one task instance from `expected` to `to`, or raise TransitionConflict."""
    changed = transition_task_instances(
        session, [ti_id], expected=expected, to=to, at=at, reason=reason, values=values
    )
    if not changed:
        actual = session.execute(
            select(TaskInstance.state).where(TaskInstance.id == ti_id)
        ).scalar()
        raise _conflict(TASK_INSTANCE, ti_id, TaskState(expected), TaskState(to), actual)


def transition_dag_run(
    session: Session,
    dag_run_id: int,
    *,
    expected: DagRunState,
    to: DagRunState,
    at: datetime,
    reason: str | None = None,
    **values: Any,
) -> None:
    """Move one DAG run from `expected` to `to`, or raise IllegalTransition/TransitionConflict."""
    expected, to = DagRunState(expected), DagRunState(to)
    if not dag_run_transition_allowed(expected, to):
        raise _illegal(DAG_RUN, expected, to, DAG_RUN_TRANSITIONS[to])
    _check_aware(at)
    reason = _masked(reason)
    extra = _extra_values(DagRun, values)
    listeners = _wanting(DAG_RUN, to.value, reason)
    with _guarded(session, listeners):
        statement = (
            update(_DAG_RUNS)
            .where(_DAG_RUNS.c.id == dag_run_id, _DAG_RUNS.c.state == expected.value)
            .values(state=to.value, **extra)
            .returning(_DAG_RUNS.c.id, _DAG_RUNS.c.dag_id, _DAG_RUNS.c.run_id)
        )
        row = session.execute(statement).first()
        if row is not None:
            _sync(session, DagRun, [row.id], {"state": to.value, **extra})
            event = TransitionEvent(
                entity=DAG_RUN,
                dag_id=row.dag_id,
                run_id=row.run_id,
                task_id=None,
                map_index=None,
                try_number=None,
                from_state=expected.value,
                to_state=to.value,
                at=at,
                reason=reason,
                entity_id=row.id,
            )
            _record(session, [event], listeners)
    if row is None:
        actual = session.execute(select(DagRun.state).where(DagRun.id == dag_run_id)).scalar()
        raise _conflict(DAG_RUN, dag_run_id, expected, to, actual)


def _conflict(
    entity: str, row_id: int, expected: str, to: str, actual: str | None
) -> TransitionConflict:
    name = f"{entity.replace('_', ' ')} {row_id}"
    if actual is None:
        return TransitionConflict(f"{name} does not exist; cannot move it {expected} -> {to}")
    return TransitionConflict(
        f"{name} is {actual}, not {expected} (it changed meanwhile); not moved to {to}"
    )
