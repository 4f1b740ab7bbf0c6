"""Pools: upsert and delete rules, and slot usage counted in one query."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from engine.exceptions import NotFound, StoreError
from engine.store.models import DagRun, TaskInstance
from engine.store.pools import delete_pool, get_pool, list_pools, set_pool


def add_task_instances(store, *specs: tuple[str, str, int]) -> None:
    """One task instance per (pool, state, pool_slots)."""
    with store.session() as session:
        session.add(
            DagRun(
                dag_id="d",
                run_id="r",
                run_type="manual",
                state="running",
                logical_date=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
        session.flush()
        for i, (pool, state, slots) in enumerate(specs):
            session.add(
                TaskInstance(
                    dag_id="d",
                    run_id="r",
                    task_id=f"t{i}",
                    state=state,
                    pool=pool,
                    pool_slots=slots,
                )
            )


def test_default_pool_is_listed_with_no_usage(store):
    with store.session(readonly=True) as session:
        pools = list_pools(session)

    assert [(p.name, p.slots, p.description, p.occupied_slots, p.open_slots) for p in pools] == [
        ("default_pool", 128, "Default pool", 0, 128)
    ]


def test_usage_counts_slots_of_queued_and_running_task_instances(store):
    with store.session() as session:
        set_pool(session, "p", 10)
        set_pool(session, "empty", 1)
    add_task_instances(
        store,
        ("p", "running", 2),
        ("p", "running", 1),
        ("p", "queued", 1),
        ("p", "scheduled", 3),
        ("p", "success", 5),
        ("p", "failed", 5),
        ("default_pool", "running", 4),
    )

    with store.session(readonly=True) as session:
        by_name = {pool.name: pool for pool in list_pools(session)}
        single = get_pool(session, "p")

    p = by_name["p"]
    assert (p.running_slots, p.queued_slots, p.scheduled_slots) == (3, 1, 3)
    assert (p.occupied_slots, p.open_slots) == (4, 6)
    assert single == p
    assert by_name["default_pool"].open_slots == 124
    assert by_name["empty"].open_slots == 1
    assert p.as_row()["pool"] == "p"


def test_list_pools_is_one_query_whatever_the_number_of_pools(store):
    with store.session() as session:
        for i in range(5):
            set_pool(session, f"p{i}", i)
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        with store.session(readonly=True) as session:
            assert len(list_pools(session)) == 6
    finally:
        event.remove(store.engine, "before_cursor_execute", count)

    assert len(statements) == 1


def test_set_pool_creates_then_updates_keeping_the_description_unless_given(store):
    with store.session() as session:
        created = set_pool(session, "etl", 3, "for ETL")
    with store.session() as session:
        resized = set_pool(session, "etl", 5)
    with store.session() as session:
        described = set_pool(session, "etl", 5, "nightly ETL")

    assert (created.slots, created.description) == (3, "for ETL")
    assert (resized.slots, resized.description) == (5, "for ETL")
    assert described.description == "nightly ETL"


@pytest.mark.parametrize("slots", [-1, True, 1.5, "3"])
def test_set_pool_refuses_bad_slots(store, slots):
    with pytest.raises(StoreError, match="slots must be an integer >= 0"):
        with store.session() as session:
            set_pool(session, "bad", slots)
    with store.session(readonly=True) as session:
        assert [pool.name for pool in list_pools(session)] == ["default_pool"]


def test_delete_pool_rules(store):
    with store.session() as session:
        set_pool(session, "gone", 1)
    with store.session() as session:
        delete_pool(session, "gone")

    with pytest.raises(StoreError, match="default_pool cannot be deleted"):
        with store.session() as session:
            delete_pool(session, "default_pool")
    with pytest.raises(NotFound, match="pool 'gone' does not exist"):
        with store.session() as session:
            delete_pool(session, "gone")
    with pytest.raises(NotFound), store.session() as session:
        get_pool(session, "gone")
