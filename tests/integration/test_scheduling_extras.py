"""max_active_tis_per_dagrun, wait_for_downstream and weight_rule through the scheduler, on
SQLite and PostgreSQL: the real loop (local executor, drain mode) recording when each
attempt starts and ends, and single ticks with a stub executor where timing cannot say it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from engine import api
from engine.clock import FakeClock
from engine.execution.stub import StubExecutor
from engine.scheduling.explain import why_not_running
from engine.scheduling.scheduler import Scheduler
from engine.states import TaskState
from engine.store import runs, transitions
from engine.store.models import DagRun, TaskInstance
from tests.integration import test_scheduler_loop as loop_tests
from tests.integration.test_scheduler_loop import (
    drain,
    entries,
    max_overlap,
    run_state,
    trigger,
)

# the real-loop fixtures of test_scheduler_loop: a config on `store`, a DAG file writer
loop_config = loop_tests.loop_config
ledger = loop_tests.ledger
add_dag = loop_tests.add_dag

T0 = datetime(2026, 1, 10, 12, tzinfo=UTC)


def states(store, dag_id: str, run_id: str) -> dict[str, str]:
    with store.session() as session:
        return {ti.task_id: ti.state for ti in runs.get_task_instances(session, dag_id, run_id)}


# -- max_active_tis_per_dagrun ------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_args", "limit_across_runs"),
    [("max_active_tis_per_dagrun=1", 2), ("max_active_tis_per_dag=1", 1)],
    ids=["per_dagrun", "per_dag"],
)
def test_per_run_limit_lets_two_runs_overlap_where_the_per_dag_one_does_not(
    store, loop_config, add_dag, ledger, task_args, limit_across_runs
):
    add_dag(
        "capped",
        f"""
        with DAG("capped", schedule=None):
            PythonOperator(task_id="t", python_callable=record, op_args=["{{{{ run_id }}}}", 0.8],
                           {task_args})
        """,
    )
    run_ids = [trigger(store, "capped", when=datetime(2026, 1, day, tzinfo=UTC)) for day in (1, 2)]
    drain(store, loop_config)
    assert {run_state(store, "capped", run_id) for run_id in run_ids} == {"success"}
    spans = entries(ledger)
    assert sorted(s["task"] for s in spans) == sorted(run_ids)
    assert max_overlap(spans) == limit_across_runs
    for run_id in run_ids:  # within one run, never more than the per-run limit
        assert max_overlap([s for s in spans if s["task"] == run_id]) <= 1


def stub_scheduler(store, config, parallelism: int = 32) -> tuple[Scheduler, StubExecutor]:
    stub = StubExecutor(parallelism)
    scheduler = Scheduler(
        store, config.with_overrides(scheduler__loop_interval=0), stub, clock=FakeClock(T0)
    )
    scheduler.start()
    return scheduler, stub


def add_instances(store, dag_id: str, run_id: str, task_id: str, count: int) -> None:
    """More scheduled instances of one task in one run, as a mapped task has (map_index
    0..count-1), so the per-run limit has something to hold back."""
    with store.session() as session:
        for index in range(count):
            session.add(
                TaskInstance(
                    dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=index,
                    state=TaskState.SCHEDULED.value, scheduled_at=T0, pool="default_pool",
                    pool_slots=1, priority_weight=1, queue="default",
                )
            )  # fmt: skip


def finish(store, stub, ti_id: int) -> None:
    with store.session() as session:
        transitions.transition_task_instance(
            session, ti_id, expected=TaskState.QUEUED, to=TaskState.RUNNING, at=T0, try_number=1
        )
        transitions.transition_task_instance(
            session, ti_id, expected=TaskState.RUNNING, to=TaskState.SUCCESS, at=T0, end_date=T0
        )
    stub.finish(ti_id, TaskState.SUCCESS)


def test_the_queue_holds_instances_of_one_task_beyond_the_per_run_limit(
    store, loop_config, add_dag
):
    add_dag(
        "fanned",
        """
        with DAG("fanned", schedule=None):
            EmptyOperator(task_id="t", max_active_tis_per_dagrun=2)
        """,
    )
    scheduler, stub = stub_scheduler(store, loop_config)
    first = trigger(store, "fanned", when=T0)
    second = trigger(store, "fanned", when=T0 + timedelta(days=1))
    scheduler.tick(T0)  # starts the runs: t (map_index -1) is queued in each
    assert sorted(r.run_id for r in stub.held.values()) == sorted([first, second])
    add_instances(store, "fanned", first, "t", 3)
    report = scheduler.tick(T0)
    # run `first` holds 1 + 1 more = 2 (its limit); 2 instances wait; `second` is untouched
    held_first = [ti_id for ti_id, r in stub.held.items() if r.run_id == first]
    assert len(held_first) == 2 and len(stub.held) == 3
    assert (
        sorted(report.waiting.values())
        == [f"task 't' is at max_active_tis_per_dagrun in run {first!r}"] * 2
    )
    scheduler.tick(T0)
    assert len(stub.held) == 3  # what is queued counts: nothing more fits yet
    finish(store, stub, held_first[0])
    scheduler.tick(T0)
    assert len([r for r in stub.held.values() if r.run_id == first]) == 2
    with store.session() as session:
        queued = session.execute(
            select(TaskInstance.map_index).where(
                TaskInstance.run_id == first, TaskInstance.state == TaskState.QUEUED.value
            )
        ).scalars()
        assert len(list(queued)) == 2


# -- wait_for_downstream ------------------------------------------------------------------


@pytest.mark.parametrize("wait_for_downstream", [True, False])
def test_the_next_runs_task_waits_for_the_previous_runs_downstream(
    store, loop_config, add_dag, ledger, wait_for_downstream
):
    """Two catch-up runs at once: `extract` of the second run starts only after `load` of
    the first ended with wait_for_downstream; with depends_on_past alone it starts as soon
    as the first run's `extract` succeeded, while that `load` is still running."""
    add_dag(
        "catchup",
        f"""
        with DAG("catchup", schedule="@daily", catchup=True, max_active_runs=2,
                 start_date=pendulum.today("UTC").subtract(days=2)):
            extract = PythonOperator(
                task_id="extract", python_callable=record, op_args=["extract {{{{ ds }}}}"],
                depends_on_past=True, wait_for_downstream={wait_for_downstream})
            load = PythonOperator(task_id="load", python_callable=record,
                                  op_args=["load {{{{ ds }}}}", 1.5])
            extract >> load
        """,
    )
    drain(store, loop_config)
    with store.session() as session:
        dag_runs = session.execute(
            select(DagRun).where(DagRun.dag_id == "catchup").order_by(DagRun.logical_date)
        ).scalars()
        days = [(run.logical_date.date().isoformat(), run.state) for run in dag_runs]
    assert [state for _, state in days] == ["success", "success"]
    spans = {s["task"]: s for s in entries(ledger)}
    (day1, _), (day2, _) = days
    assert len(spans) == 4
    first_load, second_extract = spans[f"load {day1}"], spans[f"extract {day2}"]
    assert second_extract["start"] >= spans[f"extract {day1}"]["end"]  # depends_on_past
    if wait_for_downstream:
        assert second_extract["start"] >= first_load["end"]
    else:
        assert second_extract["start"] < first_load["end"]


def test_wait_for_downstream_in_single_ticks_and_its_explanation(store, loop_config, add_dag):
    add_dag(
        "wfd",
        """
        with DAG("wfd", schedule=None):
            extract = EmptyOperator(task_id="extract", wait_for_downstream=True)
            extract >> [EmptyOperator(task_id="load"), EmptyOperator(task_id="report")]
        """,
    )
    scheduler, stub = stub_scheduler(store, loop_config)
    first = trigger(store, "wfd", when=T0)
    second = trigger(store, "wfd", when=T0 + timedelta(days=1))

    def queued() -> list[tuple[str, str]]:
        return sorted((r.run_id, r.task_id) for r in stub.held.values())

    def held(run_id: str, task_id: str) -> int:
        return next(i for i, r in stub.held.items() if (r.run_id, r.task_id) == (run_id, task_id))

    scheduler.tick(T0)
    assert queued() == [(first, "extract")]  # the second run waits for the first's extract
    finish(store, stub, held(first, "extract"))
    scheduler.tick(T0)
    scheduler.tick(T0)
    assert queued() == [(first, "load"), (first, "report")]
    assert why_not_running(store, loop_config, "wfd", second, "extract") == (
        "wait_for_downstream: in the previous run, downstream load (queued), report (queued) "
        "has not succeeded or been skipped yet"
    )
    finish(store, stub, held(first, "load"))
    scheduler.tick(T0)
    assert states(store, "wfd", second)["extract"] == "none"
    finish(store, stub, held(first, "report"))
    scheduler.tick(T0)
    assert queued() == [(second, "extract")]


def test_previous_runs_are_found_in_one_query_for_all_runs(store, loop_config, add_dag):
    from engine.store import scheduling

    add_dag(
        "many",
        """
        with DAG("many", schedule=None):
            EmptyOperator(task_id="t", depends_on_past=True)
        """,
    )
    made = [trigger(store, "many", when=T0 + timedelta(days=day)) for day in (3, 1, 2)]
    with store.session() as session:
        dag_runs = list(session.execute(select(DagRun).where(DagRun.dag_id == "many")).scalars())
        statements = []
        from sqlalchemy import event

        def count(*_args):
            statements.append(1)

        event.listen(store.engine, "before_cursor_execute", count)
        try:
            previous = scheduling.previous_run_ids(session, dag_runs)
        finally:
            event.remove(store.engine, "before_cursor_execute", count)
    by_id = {run.id: run.run_id for run in dag_runs}
    day3, day1, day2 = made
    assert {by_id[pk]: prev for pk, prev in previous.items()} == {
        day1: None,
        day2: day1,
        day3: day2,
    }
    assert len(statements) == 1


# -- weight_rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "order"),
    [
        ("downstream", ["a1", "y", "x", "a2", "a3"]),  # a1 12 > y 11; then y, x 5 > a2 2
        ("upstream", ["y", "a1", "a2", "a3", "x"]),  # y 11 > a1 10; a2 11, a3 12 > x 5
        ("absolute", ["y", "a1", "x", "a2", "a3"]),  # y 11 > a1 10 > x 5 > a2 1
    ],
)
def test_one_slot_starts_tasks_in_the_order_of_their_weight_rule_priority(
    store, loop_config, add_dag, ledger, rule, order
):
    add_dag(
        "weighted",
        f"""
        def op(name, weight):
            return PythonOperator(task_id=name, python_callable=record, op_args=[name],
                                  priority_weight=weight)

        with DAG("weighted", schedule=None, default_args={{"weight_rule": {rule!r}}}):
            op("a1", 10) >> op("a2", 1) >> op("a3", 1)
            op("x", 5)
            op("y", 11)
        """,
    )
    run_id = trigger(store, "weighted")
    drain(store, loop_config, core__parallelism=1)
    assert run_state(store, "weighted", run_id) == "success"
    spans = entries(ledger)
    assert [s["task"] for s in spans] == order
    assert max_overlap(spans) == 1


def test_triggered_runs_get_the_serialized_priority(store, loop_config, add_dag):
    add_dag(
        "prio_rows",
        """
        with DAG("prio_rows", schedule=None):
            EmptyOperator(task_id="a", priority_weight=3) >> EmptyOperator(task_id="b")
        """,
    )
    run_id = api.trigger_dag(store, "prio_rows", actor="test", now=T0).run_id
    with store.session() as session:
        rows = runs.get_task_instances(session, "prio_rows", run_id)
        assert {row.task_id: row.priority_weight for row in rows} == {"a": 4, "b": 1}


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_the_past_and_per_run_queries_scan_no_big_table(store, loop_config, add_dag):
    """The ticks that read previous runs (wait_for_downstream) and count per-run
    occupancy use indexes only (SQLite's plan; the row-value IN would be a scan)."""
    from tests.integration.test_scheduler_queries import _full_scan, recording

    add_dag(
        "planned",
        """
        with DAG("planned", schedule=None):
            first = EmptyOperator(task_id="first", wait_for_downstream=True,
                                  max_active_tis_per_dagrun=1)
            first >> EmptyOperator(task_id="second")
        """,
    )
    scheduler, _ = stub_scheduler(store, loop_config)
    for day in range(3):
        trigger(store, "planned", when=T0 + timedelta(days=day))
    statements = recording(store)
    scheduler.tick(T0)
    scheduler.tick(T0)
    queries = [(q, p) for q, p in statements if q.lstrip().upper().startswith("SELECT")]
    assert any("dag_run_1" in query for query, _ in queries)  # the previous-run lookup ran
    with store.engine.connect() as connection:
        for query, parameters in queries:
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}", parameters).all()
            assert not [row[-1] for row in plan if _full_scan(row[-1])], query
