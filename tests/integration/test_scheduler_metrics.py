"""What the scheduler's step emits, read from the strict recorder every test runs under
(`emitted` in tests/conftest.py): zombies, orphans, run outcomes and delays, loop gauges."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from engine.states import DagRunState, TaskState
from engine.store import runs, transitions
from engine.store.models import DagRun, TaskInstance
from metrics.testing import MemoryBackend
from tests.integration.test_scheduler_tick import T0, Clock, complete, trigger

TAGS = {"dag_id": "m", "task_id": "t"}


def _sum(emitted: MemoryBackend, name: str, **labels: str) -> float:
    return sum(v for got, v in emitted.values(name) if labels.items() <= got.items())


def test_a_zombie_counts_as_a_failed_attempt_without_heartbeat(
    store, add_dag, make_scheduler, emitted
):
    add_dag("m", 'with DAG("m", schedule=None):\n    EmptyOperator(task_id="t", retries=1)\n')
    scheduler, stub = make_scheduler(scheduler__heartbeat_timeout=30)
    trigger(store, "m")
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)
    stub.held.clear()
    with store.session() as session:
        transitions.transition_task_instance(
            session, ti_id, expected=TaskState.QUEUED, to=TaskState.RUNNING, at=T0,
            try_number=1, last_heartbeat=T0,
        )  # fmt: skip
        runs.start_try(session, session.get(TaskInstance, ti_id), hostname="h", pid=1,
                       log_path="x", now=T0)  # fmt: skip
    emitted.clear()
    scheduler._last_housekeeping = 0
    scheduler.tick(T0 + timedelta(seconds=31))
    assert emitted.values("task_instances_without_heartbeats_killed") == [(TAGS, 1.0)]
    assert emitted.values("ti.finish") == [({**TAGS, "state": "up_for_retry"}, 1.0)]
    assert emitted.values("ti_failures") == [(TAGS, 1.0)]
    assert emitted.values("ti.retries") == [(TAGS, 1.0)]
    assert emitted.values("operator_failures") == [({"operator": "EmptyOperator"}, 1.0)]
    assert _sum(emitted, "scheduler_heartbeat") == 1


def test_orphans_reset_on_start_are_counted(store, add_dag, make_scheduler, emitted):
    add_dag("m", 'with DAG("m", schedule=None):\n    EmptyOperator(task_id="t")\n')
    first, _ = make_scheduler()
    trigger(store, "m")
    first.tick(T0)
    emitted.clear()
    make_scheduler()
    assert emitted.values("scheduler.orphaned_tasks.cleared") == [({}, 1.0)]


def test_a_scheduled_run_reports_its_delays_and_duration(store, add_dag, make_scheduler, emitted):
    add_dag(
        "m",
        """
        with DAG("m", schedule="@hourly", start_date=pendulum.datetime(2026, 1, 10, 10),
                 catchup=False):
            EmptyOperator(task_id="t")
        """,
    )
    clock = Clock(T0 + timedelta(minutes=5))  # the 11:00-12:00 interval ended 5 min ago
    scheduler, stub = make_scheduler(clock=clock)
    scheduler.tick(clock.now)
    assert emitted.values("dagrun.schedule_delay") == [({"dag_id": "m"}, 300.0)]
    (ti_id,) = list(stub.held)
    later = clock.now + timedelta(minutes=2)
    with store.session() as session:  # the attempt starts 7 min after the interval's end
        session.get(TaskInstance, ti_id).start_date = later
    complete(store, stub, ti_id, TaskState.SUCCESS, now=later)
    scheduler.tick(later)
    with store.session() as session:
        run = session.execute(select(DagRun)).scalar_one()
        assert (run.run_type, run.state) == ("scheduled", DagRunState.SUCCESS)
    assert emitted.values("dagrun.duration.success") == [({"dag_id": "m"}, 120.0)]
    assert emitted.values("dagrun.first_task_scheduling_delay") == [({"dag_id": "m"}, 420.0)]
    assert {tuple(tags.items()) for tags, _ in emitted.values("dagrun.dependency-check")} == {
        (("dag_id", "m"),)
    }


def test_loop_gauges_describe_slots_and_starving_tasks(store, add_dag, make_scheduler, emitted):
    from engine.store import pools

    with store.session() as session:
        pools.set_pool(session, "three", 3)
    add_dag(
        "m",
        """
        with DAG("m", schedule=None):
            for i in range(4):
                EmptyOperator(task_id=f"t{i}", pool="three")
        """,
    )
    scheduler, _ = make_scheduler(parallelism=10)
    trigger(store, "m")
    scheduler.tick(T0)  # queues 3 of 4; gauges are read at the start of queueing
    scheduler._last_gauges = 0
    emitted.clear()
    scheduler.tick(T0)
    gauges = {(e.name, tuple(e.labels.items())): e.value for e in emitted.emissions}
    assert gauges[("pool.open_slots", (("pool", "three"),))] == 0
    assert gauges[("pool.starving_tasks", (("pool", "three"),))] == 1
    assert gauges[("scheduler.tasks.starving", ())] == 1
    assert gauges[("scheduler.dagruns.running", ())] == 1
    assert gauges[("executor.queued_tasks", ())] == 3
    assert gauges[("executor.open_slots", ())] == 7
    assert [e.name for e in emitted.emissions].count("scheduler.scheduler_loop_duration") == 1
