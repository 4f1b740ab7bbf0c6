"""The state write path: state machines enforced, compare-and-set, event rows, listeners."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from sqlalchemy import func, select

from engine.exceptions import IllegalTransition, StoreError, TransitionConflict
from engine.states import DAG_RUN_TRANSITIONS, TASK_TRANSITIONS, DagRunState, TaskState
from engine.store import transitions
from engine.store.models import DagRun, StateTransition, TaskInstance
from engine.store.transitions import (
    TransitionEvent,
    add_transition_listener,
    remove_transition_listener,
    transition_dag_run,
    transition_task_instance,
    transition_task_instances,
)

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEGAL_TASK = [(f, t) for t, froms in TASK_TRANSITIONS.items() for f in sorted(froms)]
ILLEGAL_TASK = [(f, t) for t in TaskState for f in TaskState if f not in TASK_TRANSITIONS[t]]
LEGAL_RUN = [(f, t) for t, froms in DAG_RUN_TRANSITIONS.items() for f in sorted(froms)]
ILLEGAL_RUN = [(f, t) for t in DagRunState for f in DagRunState if f not in DAG_RUN_TRANSITIONS[t]]
_dates = count()
_runs = count()


def make_run(store, state: DagRunState = DagRunState.RUNNING) -> DagRun:
    with store.session() as session:
        run = DagRun(
            dag_id="dag",
            run_id=f"run_{next(_runs)}",
            run_type="manual",
            state=state.value,
            logical_date=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=next(_dates)),
        )
        session.add(run)
    return run


def make_tis(store, run: DagRun, *states: TaskState) -> list[int]:
    with store.session() as session:
        rows = [
            TaskInstance(dag_id=run.dag_id, run_id=run.run_id, task_id=f"t{i}", state=state.value)
            for i, state in enumerate(states)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def ti_state(store, ti_id: int) -> str:
    with store.session(readonly=True) as session:
        return session.scalar(select(TaskInstance.state).where(TaskInstance.id == ti_id))


def events(store) -> list[StateTransition]:
    with store.session(readonly=True) as session:
        return list(session.scalars(select(StateTransition).order_by(StateTransition.id)))


def test_every_legal_task_transition_succeeds_and_is_recorded(store):
    run = make_run(store)
    ids = make_tis(store, run, *(from_state for from_state, _ in LEGAL_TASK))

    for ti_id, (from_state, to_state) in zip(ids, LEGAL_TASK, strict=True):
        with store.session() as session:
            transition_task_instance(
                session, ti_id, expected=from_state, to=to_state, at=AT, reason="test"
            )
        assert ti_state(store, ti_id) == to_state, (from_state, to_state)

    recorded = events(store)
    assert [(e.from_state, e.to_state) for e in recorded] == [(f, t) for f, t in LEGAL_TASK]
    first = recorded[0]
    assert (first.entity, first.dag_id, first.run_id, first.task_id) == (
        "task_instance",
        "dag",
        run.run_id,
        "t0",
    )
    assert (first.map_index, first.try_number, first.reason, first.at) == (-1, 0, "test", AT)


def test_illegal_task_transitions_raise_and_change_nothing(store):
    run = make_run(store)
    ids = make_tis(store, run, *(from_state for from_state, _ in ILLEGAL_TASK))

    for ti_id, (from_state, to_state) in zip(ids, ILLEGAL_TASK, strict=True):
        with pytest.raises(IllegalTransition) as info, store.session() as session:
            transition_task_instance(session, ti_id, expected=from_state, to=to_state, at=AT)
        assert str(info.value).startswith(
            f"task instance: {from_state} -> {to_state} is not allowed; allowed from: "
        )
        assert ti_state(store, ti_id) == from_state
    assert len(ILLEGAL_TASK) > 50  # the complement of the table, not a token sample
    assert events(store) == []


def test_illegal_message_lists_the_allowed_from_states():
    with pytest.raises(IllegalTransition) as info:
        transition_task_instances(None, [1], expected="none", to="running", at=AT)

    assert str(info.value) == "task instance: none -> running is not allowed; allowed from: queued"


def test_every_legal_dag_run_transition_succeeds_and_is_recorded(store):
    for from_state, to_state in LEGAL_RUN:
        run = make_run(store, from_state)
        with store.session() as session:
            transition_dag_run(
                session, run.id, expected=from_state, to=to_state, at=AT, end_date=AT
            )
        with store.session(readonly=True) as session:
            row = session.get(DagRun, run.id)
            assert (row.state, row.end_date) == (to_state, AT), (from_state, to_state)

    recorded = events(store)
    assert [(e.entity, e.from_state, e.to_state) for e in recorded] == [
        ("dag_run", f, t) for f, t in LEGAL_RUN
    ]
    assert all(e.task_id is None and e.try_number is None for e in recorded)


def test_illegal_dag_run_transitions_raise_and_change_nothing(store):
    for from_state, to_state in ILLEGAL_RUN:
        run = make_run(store, from_state)
        with pytest.raises(IllegalTransition, match=r"dag run: \w+ -> \w+ is not allowed"):
            with store.session() as session:
                transition_dag_run(session, run.id, expected=from_state, to=to_state, at=AT)
        with store.session(readonly=True) as session:
            assert session.get(DagRun, run.id).state == from_state
    assert events(store) == []


def test_stale_expected_state_is_a_conflict_and_writes_no_event(store):
    run = make_run(store)
    (ti_id,) = make_tis(store, run, TaskState.QUEUED)
    seen = ti_state(store, ti_id)  # a scheduler reads "queued" ...
    with store.session() as session:  # ... meanwhile a worker starts the task ...
        transition_task_instance(session, ti_id, expected=TaskState.QUEUED, to="running", at=AT)

    with pytest.raises(TransitionConflict) as info, store.session() as session:
        # ... and the scheduler's decision, based on what it saw, must not apply.
        transition_task_instance(session, ti_id, expected=seen, to=TaskState.FAILED, at=AT)

    assert str(info.value) == (
        f"task instance {ti_id} is running, not queued (it changed meanwhile); not moved to failed"
    )
    assert ti_state(store, ti_id) == "running"
    assert [(e.from_state, e.to_state) for e in events(store)] == [("queued", "running")]


def test_conflicts_name_missing_rows(store):
    run = make_run(store, DagRunState.QUEUED)
    with pytest.raises(TransitionConflict, match="task instance 999 does not exist"):
        with store.session() as session:
            transition_task_instance(session, 999, expected="none", to="scheduled", at=AT)
    with pytest.raises(TransitionConflict, match=f"dag run {run.id} is queued, not running"):
        with store.session() as session:
            transition_dag_run(session, run.id, expected="running", to="success", at=AT)
    assert events(store) == []


def test_bulk_transition_changes_only_rows_in_the_expected_state(store, monkeypatch):
    monkeypatch.setattr(transitions, "CHUNK_SIZE", 2)  # several UPDATE statements
    run = make_run(store)
    s, n = TaskState.SCHEDULED, TaskState.NONE
    ids = make_tis(store, run, s, n, s, s, n)

    with store.session() as session:
        changed = transition_task_instances(
            session,
            [*ids, ids[0]],
            expected=s,
            to=TaskState.QUEUED,
            at=AT,
            values={"queued_at": AT},
        )

    assert sorted(changed) == [ids[0], ids[2], ids[3]]
    assert [ti_state(store, ti_id) for ti_id in ids] == [
        "queued",
        "none",
        "queued",
        "queued",
        "none",
    ]
    with store.session(readonly=True) as session:
        assert session.get(TaskInstance, ids[0]).queued_at == AT
        assert session.get(TaskInstance, ids[1]).queued_at is None
    assert sorted(e.task_id for e in events(store)) == ["t0", "t2", "t3"]


def test_transition_updates_objects_loaded_in_the_session(store):
    run = make_run(store)
    (ti_id,) = make_tis(store, run, TaskState.QUEUED)
    with store.session() as session:
        ti = session.get(TaskInstance, ti_id)
        transition_task_instance(
            session,
            ti_id,
            expected="queued",
            to="running",
            at=AT,
            start_date=AT,
            try_number=TaskInstance.try_number + 1,
        )
        assert (ti.state, ti.start_date, ti.try_number) == ("running", AT, 1)


def test_bad_arguments_are_refused_before_writing(store):
    run = make_run(store)
    (ti_id,) = make_tis(store, run, TaskState.NONE)
    with store.session() as session:
        with pytest.raises(ValueError, match="naive"):
            transition_task_instance(
                session, ti_id, expected="none", to="scheduled", at=AT.replace(tzinfo=None)
            )
        with pytest.raises(ValueError, match="no settable column"):
            transition_task_instance(
                session, ti_id, expected="none", to="scheduled", at=AT, state="x"
            )
    assert ti_state(store, ti_id) == "none"


def test_assigning_state_directly_is_refused(store):
    run = make_run(store)
    (ti_id,) = make_tis(store, run, TaskState.RUNNING)

    with pytest.raises(StoreError, match="assigned directly"), store.session() as session:
        session.get(TaskInstance, ti_id).state = "success"
    with pytest.raises(StoreError, match="assigned directly"), store.session() as session:
        session.get(DagRun, run.id).state = "success"

    assert ti_state(store, ti_id) == "running"
    assert events(store) == []


def test_listeners_see_events_inside_the_transaction(store):
    run = make_run(store)
    ids = make_tis(store, run, TaskState.NONE, TaskState.NONE)
    seen: list[tuple[list[TransitionEvent], int, str]] = []

    def listener(session, batch):
        in_transaction = session.scalar(select(func.count()).select_from(StateTransition))
        outside = ti_state(store, batch[0].entity_id)  # another connection: not committed yet
        seen.append((batch, in_transaction, outside))

    add_transition_listener(listener)
    try:
        with store.session() as session:
            transition_task_instances(session, ids, expected="none", to="scheduled", at=AT)
    finally:
        remove_transition_listener(listener)

    ((batch, in_transaction, outside),) = seen
    assert sorted(e.entity_id for e in batch) == ids
    assert {(e.entity, e.from_state, e.to_state, e.at) for e in batch} == {
        ("task_instance", "none", "scheduled", AT)
    }
    assert (in_transaction, outside) == (2, "none")


def test_raising_listener_rolls_the_transition_back_even_if_the_caller_goes_on(store):
    run = make_run(store)
    (ti_id,) = make_tis(store, run, TaskState.NONE)

    def listener(session, batch):
        raise RuntimeError("outbox is full")

    add_transition_listener(listener)
    try:
        with store.session() as session:
            with pytest.raises(RuntimeError, match="outbox is full"):
                transition_task_instance(session, ti_id, expected="none", to="scheduled", at=AT)
            # the caller catches and commits its other work: the transition must not leak
    finally:
        remove_transition_listener(listener)

    assert ti_state(store, ti_id) == "none"
    assert events(store) == []


def test_removed_listener_is_not_called(store):
    run = make_run(store)
    (ti_id,) = make_tis(store, run, TaskState.NONE)
    calls: list[object] = []
    add_transition_listener(lambda session, batch: calls.append(batch))
    listener = transitions._listeners[-1]
    remove_transition_listener(listener)

    with store.session() as session:
        transition_task_instance(session, ti_id, expected="none", to="scheduled", at=AT)

    assert calls == []
    assert ti_state(store, ti_id) == "scheduled"


class _Picky:
    """A listener that wants only transitions to `failed`."""

    def __init__(self) -> None:
        self.calls: list[list[TransitionEvent]] = []
        self.asked: list[tuple[str, str, str | None]] = []

    def wants(self, entity: str, to_state: str, reason: str | None) -> bool:
        self.asked.append((entity, to_state, reason))
        return to_state == "failed"

    def __call__(self, session, batch) -> None:
        self.calls.append(batch)


def _statements(store, work) -> list[str]:
    from sqlalchemy import event

    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if statement.split()[0].upper() != "BEGIN":  # SQLite's own; PostgreSQL's is implicit
            seen.append(statement.split()[0].upper())

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        work()
    finally:
        event.remove(store.engine, "before_cursor_execute", before)
    return seen


def test_a_listener_gets_only_the_transitions_it_wants_and_others_take_no_savepoint(store):
    run = make_run(store)
    ids = make_tis(store, run, TaskState.NONE, TaskState.NONE)
    picky = _Picky()
    add_transition_listener(picky)
    try:

        def unwanted():
            with store.session() as session:
                transition_task_instances(session, ids, expected="none", to="scheduled", at=AT)

        def wanted():
            with store.session() as session:
                transition_task_instance(session, ids[0], expected="scheduled", to="queued", at=AT)
                transition_task_instance(
                    session, ids[0], expected="queued", to="failed", at=AT, reason="gone"
                )

        quiet, guarded = _statements(store, unwanted), _statements(store, wanted)
    finally:
        remove_transition_listener(picky)

    assert ("task_instance", "scheduled", None) in picky.asked
    assert ("task_instance", "failed", "gone") in picky.asked
    assert [[e.to_state for e in batch] for batch in picky.calls] == [["failed"]]
    assert "SAVEPOINT" not in quiet and "UPDATE" in quiet and "INSERT" in quiet
    assert guarded.count("SAVEPOINT") == 1
    assert [ti_state(store, i) for i in ids] == ["failed", "scheduled"]
    assert len(events(store)) == 4


def test_a_raising_listener_that_wants_the_transition_still_rolls_it_back(store):
    run = make_run(store)
    (ti_id,) = make_tis(store, run, TaskState.NONE)

    class Raising(_Picky):
        def __call__(self, session, batch) -> None:
            raise RuntimeError("outbox is full")

    listener = Raising()
    add_transition_listener(listener)
    try:
        with store.session() as session:
            with pytest.raises(RuntimeError, match="outbox is full"):
                transition_task_instance(session, ti_id, expected="none", to="failed", at=AT)
            transition_task_instance(session, ti_id, expected="none", to="scheduled", at=AT)
            # the caller goes on and commits: only the unwanted transition is kept
    finally:
        remove_transition_listener(listener)

    assert ti_state(store, ti_id) == "scheduled"
    assert [(e.from_state, e.to_state) for e in events(store)] == [("none", "scheduled")]
