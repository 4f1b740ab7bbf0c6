"""The scheduler's hot path is batched and indexed: the number of statements a tick runs
does not grow with the number of task instances, and none scans a big table."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, select

from engine import api
from engine.clock import FakeClock
from engine.execution.stub import StubExecutor
from engine.parsing.parser import process_folders
from engine.scheduling.scheduler import HOUSEKEEPING_INTERVAL, Scheduler
from engine.store.db import Store
from engine.store.migrate import migrate
from engine.store.models import TaskInstance

T0 = datetime(2026, 1, 10, 12, tzinfo=UTC)
#: Tables that grow with use; a full scan of one of them in the loop is a defect.
BIG_TABLES = (
    "task_instance",
    "dag_run",
    "task_try",
    "xcom",
    "state_transition",
    "alert",
    "alert_delivery",
    "sla_miss",
)


def recording(store) -> list[tuple[str, object]]:
    """Every SQL statement the store runs from now on (bulk inserts left out)."""
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if not executemany:
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    return seen


@pytest.fixture
def fresh_store(home):
    """A new migrated SQLite metastore per call, so two workloads do not mix."""
    made = []

    def _make(name: str):
        store = Store(f"sqlite:///{home / name}.db")
        migrate(store)
        made.append(store)
        return store

    yield _make
    for store in made:
        store.dispose()


def prepare(store, config, width: int, runs: int = 1) -> Scheduler:
    config = config.with_overrides(
        core__load_examples=False, core__dags_are_paused_at_creation=False
    )
    folder = config["core.dags_folder"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"wide_{width}.py").write_text(
        textwrap.dedent(
            f"""
            from engine import DAG, EmptyOperator
            with DAG("wide_{width}", schedule=None, max_active_tasks=100000):
                first = EmptyOperator(task_id="first")
                first >> [EmptyOperator(task_id=f"t{{i}}") for i in range({width})]
            """
        )
    )
    process_folders(store, config)
    scheduler = Scheduler(store, config, StubExecutor(parallelism=100000), clock=FakeClock(T0))
    scheduler.start()
    for number in range(runs):
        api.trigger_dag(
            store, f"wide_{width}", actor="test", now=T0, logical_date=T0 - timedelta(days=number)
        )
    return scheduler


def succeed(scheduler, ti_id: int) -> None:
    """What a worker records for an attempt that succeeds, and the stub's report of it."""
    from engine.states import TaskState
    from engine.store import transitions

    with scheduler.store.session() as session:
        transitions.transition_task_instance(
            session, ti_id, expected=TaskState.QUEUED, to=TaskState.RUNNING, at=T0, try_number=1
        )
        transitions.transition_task_instance(
            session, ti_id, expected=TaskState.RUNNING, to=TaskState.SUCCESS, at=T0
        )
    scheduler.executor.finish(ti_id, TaskState.SUCCESS)


def tick_statements(scheduler, statements: list) -> list[tuple[str, object]]:
    """Run two ticks (start the run, then fan out after `first` ends); return the SQL."""
    scheduler.tick(T0)
    for ti_id in list(scheduler.executor.held):
        succeed(scheduler, ti_id)
    statements.clear()
    scheduler.tick(T0)
    return list(statements)


def test_statements_per_tick_do_not_grow_with_task_count(fresh_store, config):
    small_store, large_store = fresh_store("small"), fresh_store("large")
    small = tick_statements(prepare(small_store, config, 10), recording(small_store))
    large = tick_statements(prepare(large_store, config, 500), recording(large_store))
    # The 500-wide fan-out was decided and queued with the same statements as the 10-wide
    # one; only chunked IN lists (500 ids per statement) may add a few.
    assert len(large) <= len(small) + 4, (len(small), len(large))


def test_no_tick_statement_scans_a_big_table(fresh_store, config):
    store = fresh_store("plans")
    scheduler = prepare(store, config, 50)
    queries = [
        (query, parameters)
        for query, parameters in tick_statements(scheduler, recording(store))
        if query.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))
    ]
    assert len(queries) >= 5
    with store.engine.connect() as connection:
        for query, parameters in queries:
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}", parameters).all()
            scans = [row[-1] for row in plan if _full_scan(row[-1])]
            assert not scans, f"{query}\n-> {scans}"


def test_several_runs_and_the_alerts_hooks_scan_no_big_table(fresh_store, config):
    """Row-value IN over several runs is a full scan on SQLite; the store must not use it."""
    from engine import hooks

    store = fresh_store("plans_many")
    hooks.install(
        config.with_overrides(
            # group_by = []: the route's task_resolved lookup runs in the tick (a grouped
            # route resolves its incidents in the dispatcher, outside the tick)
            alerts__routes={
                "oncall": {"urls": ["json://127.0.0.1:9/x"], "events": [], "group_by": []}
            },
            alerts__send_resolved=True,
        )
    )
    try:
        scheduler = prepare(store, config, 20, runs=3)
        statements = recording(store)
        tick_statements(scheduler, [])  # start the runs, `first` succeeds, fan out
        queries = list(statements)
    finally:
        hooks.uninstall()
    queries = [q for q in queries if q[0].lstrip().upper().startswith(("SELECT", "UPDATE"))]
    assert any("task_instance" in query for query, _ in queries)
    assert any("FROM alert" in query for query, _ in queries)  # the resolved lookup ran
    _assert_no_big_scan(store, queries)


def _assert_no_big_scan(store, queries: list[tuple[str, object]]) -> None:
    with store.engine.connect() as connection:
        for query, parameters in queries:
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}", parameters).all()
            scans = [row[-1] for row in plan if _full_scan(row[-1])]
            assert not scans, f"{query}\n-> {scans}"


def _full_scan(detail: str) -> bool:
    words = detail.split()
    return (
        len(words) >= 2 and words[0] == "SCAN" and words[1] in BIG_TABLES and "USING" not in detail
    )


def test_a_leaf_that_ends_costs_a_few_rows_not_the_whole_run(fresh_store, config, monkeypatch):
    """After one of 500 fanned-out tasks ends, the tick reads that task (nothing lies
    downstream of it) and asks whether the run has unfinished tasks; it does not read all
    501 task instances, and it runs no scan of a big table."""
    from engine.store import scheduling

    store = fresh_store("leaf")
    # no full pass unless the test asks for one, however slow the machine is
    scheduler = prepare(store, config.with_overrides(scheduler__loop_interval=3600), 500)
    tick_statements(scheduler, [])  # `first` succeeded, the 500 are queued
    stub = scheduler.executor
    leaf = next(iter(stub.held))
    succeed(scheduler, leaf)
    rows_read = []  # what the decision read (the queue's own read is bounded by its limit)
    whole_runs, some_tasks = (
        scheduling.task_instances_of_runs,
        scheduling.task_instances_of_run_tasks,
    )

    def of_runs(session, keys):
        found = whole_runs(session, keys)
        rows_read.extend(row for rows in found.values() for row in rows)
        return found

    def of_tasks(session, wanted):
        found = some_tasks(session, wanted)
        rows_read.extend(row for rows in found.values() for row in rows)
        return found

    monkeypatch.setattr(scheduling, "task_instances_of_runs", of_runs)
    monkeypatch.setattr(scheduling, "task_instances_of_run_tasks", of_tasks)
    statements = recording(store)
    scheduler.tick(T0)
    assert [row.id for row in rows_read] == [leaf]
    assert any("EXISTS" in query for query, _ in statements)

    # A full pass (every loop interval) reads what still waits to be decided: nothing here.
    rows_read.clear()
    scheduler.clock.advance(3600)
    scheduler.tick(T0)
    assert scheduler.last_report.active_runs == 1
    assert rows_read == []
    with store.engine.connect() as connection:
        for query, parameters in statements:
            if not query.lstrip().upper().startswith("SELECT"):
                continue
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}", parameters).all()
            assert not [row[-1] for row in plan if _full_scan(row[-1])], query


def _leaf_tick_statements(store, config, runs: int) -> list[tuple[str, object]]:
    """The statements of the tick after one leaf of each of `runs` fanned-out runs ended
    (so each run's decision reads just that leaf)."""

    scheduler = prepare(store, config.with_overrides(scheduler__loop_interval=3600), 10, runs)
    tick_statements(scheduler, [])  # each run's `first` succeeded, its 10 are queued
    stub = scheduler.executor
    with store.session(readonly=True) as session:
        held = session.execute(
            select(TaskInstance.run_id, TaskInstance.id).where(TaskInstance.id.in_(stub.held))
        ).all()
    leaves: dict[str, int] = {}
    for run_id, ti_id in sorted(held):
        leaves.setdefault(run_id, ti_id)
    assert len(leaves) == runs
    for leaf in leaves.values():
        succeed(scheduler, leaf)
    statements = recording(store)
    scheduler.tick(T0)
    assert scheduler.last_report.active_runs == runs
    return statements


def test_statements_per_tick_do_not_grow_with_run_count(fresh_store, config):
    """Runs decided on part of their task instances are read together, not one by one."""
    one = _leaf_tick_statements(fresh_store("one_run"), config, 1)
    eight = _leaf_tick_statements(fresh_store("eight_runs"), config, 8)
    assert len(eight) <= len(one), (
        len(one),
        len(eight),
        [query.split("WHERE")[0][:80] for query, _ in eight],
    )
    store = fresh_store("plan_of_eight")
    statements = _leaf_tick_statements(store, config, 8)
    with store.engine.connect() as connection:
        for query, parameters in statements:
            if query.lstrip().upper().startswith("SELECT"):
                plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}", parameters).all()
                assert not [row[-1] for row in plan if _full_scan(row[-1])], query


def test_the_queue_is_read_in_index_order_without_sorting(fresh_store, config):
    """Picking the highest-priority scheduled task instances must not sort all of them."""
    store = fresh_store("order")
    scheduler = prepare(store, config, 50)
    statements = recording(store)
    scheduler.tick(T0)
    candidates = [
        (query, parameters)
        for query, parameters in statements
        if "ORDER BY task_instance.priority_weight DESC" in query
    ]
    assert candidates
    with store.engine.connect() as connection:
        for query, parameters in candidates:
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}", parameters).all()
            details = [row[-1] for row in plan]
            assert any("ix_task_instance_queue_order" in d for d in details), details
            assert not any("TEMP B-TREE" in d for d in details), details


def test_housekeeping_and_adoption_scan_no_big_table(fresh_store, config):
    """Zombies, dead schedulers and what they queued: found through indexes."""
    store = fresh_store("housekeeping")
    scheduler = prepare(store, config, 50)
    scheduler.tick(T0)
    statements = recording(store)
    scheduler.clock.advance(HOUSEKEEPING_INTERVAL)  # housekeeping is due
    scheduler.tick(T0)
    queries = [
        (query, parameters)
        for query, parameters in statements
        if query.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))
    ]
    assert any("queued_by_job_id" in query for query, _ in queries)  # adoption was looked for
    _assert_no_big_scan(store, queries)
