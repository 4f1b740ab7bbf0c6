"""What an attempt costs the metastore: its statements and transactions.

On PostgreSQL every statement is a round trip, and a round trip is what a busy machine
makes expensive (docs/performance.md, "PostgreSQL against SQLite"). An attempt that
nothing listens to takes two transactions (start, outcome) and no savepoint; its
rendered template fields are written with its outcome.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import event, select

from engine.clock import FakeClock
from engine.execution import runner
from engine.execution.attempt import load_dag
from engine.execution.stub import StubExecutor
from engine.scheduling.scheduler import Scheduler
from engine.store.models import RenderedFields, StateTransition, TaskInstance, TaskTry
from tests.integration import test_scheduler_tick as tick_tests
from tests.integration.test_scheduler_tick import trigger

sched_config = tick_tests.sched_config
add_dag = tick_tests.add_dag
NOW = datetime.now(UTC)


def test_an_attempt_takes_two_transactions_of_eight_statements(store, sched_config, add_dag):
    add_dag(
        "counted",
        """
        @task
        def noop(value):
            return None

        with DAG("counted", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
            noop.override(task_id="t")("{{ run_id }}")
        """,
    )
    stub = StubExecutor()
    scheduler = Scheduler(store, sched_config, stub, clock=FakeClock(NOW))
    scheduler.start()
    run_id = trigger(store, "counted", NOW)
    for _ in range(3):
        scheduler.tick(NOW)
    (request,) = stub.history
    dag = load_dag(request.fileloc, request.dag_id, request.task_id, None)
    statements: list[str] = []
    transactions: list[str] = []

    # the attempt's own: the scheduler's service threads share the engine and may poll
    attempt_thread = threading.get_ident()

    def before(conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() != attempt_thread:
            return
        if statement.split()[0].upper() != "BEGIN":  # SQLite's own; PostgreSQL's is implicit
            statements.append(statement.split()[0].upper())

    def begin(conn):
        if threading.get_ident() == attempt_thread:
            transactions.append("begin")

    event.listen(store.engine, "before_cursor_execute", before)
    event.listen(store.engine, "begin", begin)
    try:
        result = runner.run_attempt(store, sched_config, dag, request.ti_id)
    finally:
        event.remove(store.engine, "before_cursor_execute", before)
        event.remove(store.engine, "begin", begin)

    assert result.state.value == "success"
    # start: read the row and its run, move it, its event, its try; outcome: move it, its
    # event, close the try, the rendered fields
    assert sorted(statements) == sorted(
        ["SELECT", "UPDATE", "INSERT", "INSERT", "UPDATE", "INSERT", "UPDATE", "INSERT"]
    ), statements
    assert transactions == ["begin", "begin"]
    with store.session(readonly=True) as session:
        ti = session.get(TaskInstance, request.ti_id)
        (rendered,) = session.scalars(select(RenderedFields))
        (attempt,) = session.scalars(select(TaskTry).where(TaskTry.ti_id == ti.id))
        moves = session.execute(
            select(StateTransition.from_state, StateTransition.to_state).where(
                StateTransition.task_id == "t", StateTransition.from_state == "queued"
            )
        ).all()
    assert (ti.state, ti.try_number, attempt.state) == ("success", 1, "success")
    assert (rendered.run_id, rendered.try_number) == (run_id, 1)
    assert run_id in rendered.fields["op_args"]
    assert moves == [("queued", "running")]
