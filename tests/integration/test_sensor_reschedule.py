"""Sensors in reschedule mode on SQLite and PostgreSQL: the real loop (local executor, drain
mode) for slots, timeouts, retries and logs; single ticks with a stub executor and the real
runner where the state between two pokes must be looked at (explanation, metrics)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from engine import api
from engine.execution.attempt import DagCache, fail_unstarted, run_here
from engine.execution.stub import StubExecutor
from engine.observability.collector import metastore_source
from engine.observability.service import GaugePusher
from engine.scheduling.explain import why_not_running
from engine.scheduling.scheduler import Scheduler
from engine.states import TaskState
from engine.store import pools, runs, scheduling
from engine.store.models import StateTransition, TaskInstance, TaskTry
from metrics import Stats
from metrics.statsd import StatsdBackend
from tests.integration import test_observability_collector as collector_tests
from tests.integration import test_scheduler_loop as loop_tests
from tests.integration.test_observability_collector import labels, scrape, ti_labels
from tests.integration.test_scheduler_loop import drain, entries, run_state, trigger
from tests.metrics.conftest import UdpReceiver

# the real-loop fixtures of test_scheduler_loop: a config on `store`, a DAG file writer
loop_config = loop_tests.loop_config
ledger = loop_tests.ledger
add_dag = loop_tests.add_dag
backend = collector_tests.backend  # a Prometheus backend serving /metrics on loopback


def states(store, dag_id: str, run_id: str) -> dict[str, str]:
    with store.session() as session:
        return {ti.task_id: ti.state for ti in runs.get_task_instances(session, dag_id, run_id)}


def moves(store, dag_id: str, task_id: str) -> list[tuple[str, str, int | None, datetime]]:
    """(from, to, try_number, at) of every transition of one task, in order."""
    with store.session() as session:
        rows = session.execute(
            select(
                StateTransition.from_state,
                StateTransition.to_state,
                StateTransition.try_number,
                StateTransition.at,
            )
            .where(StateTransition.dag_id == dag_id, StateTransition.task_id == task_id)
            .order_by(StateTransition.id)
        )
        return [tuple(row) for row in rows]


def tries(store, dag_id: str, task_id: str) -> list[TaskTry]:
    with store.session() as session:
        found = list(
            session.execute(
                select(TaskTry)
                .where(TaskTry.dag_id == dag_id, TaskTry.task_id == task_id)
                .order_by(TaskTry.try_number)
            ).scalars()
        )
        session.expunge_all()
    return found


def task_row(store, dag_id: str, run_id: str, task_id: str) -> dict:
    """The row `dagwatch tasks states-for-dag-run` prints for one task."""
    return next(r for r in api.task_states(store, dag_id, run_id) if r["task_id"] == task_id)


#: a run that never ends would hang `drain`: a broken feature fails the test instead
GIVE_UP_SOURCE = "GIVE_UP = timedelta(seconds=30)\n"


def counter_source(path: Path) -> str:
    """DAG-file code for `pokes()`: counts calls across attempt processes in a file."""
    return (
        GIVE_UP_SOURCE
        + f"""
COUNTER = {str(path)!r}

def pokes():
    with open(COUNTER, "a") as out:
        out.write("x")
    n = os.path.getsize(COUNTER)
    print(f"poke #{{n}}")
    return n


def slow_pokes():
    time.sleep(0.3)
    return pokes()
"""
    )


# -- the real loop --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_a_rescheduled_sensor_lets_the_task_it_waits_for_use_its_only_pool_slot(
    store, loop_config, add_dag, ledger, tmp_path, mode
):
    """One slot, two tasks: the sensor (first, by priority) waits for a file `make` creates.
    Poking, it holds the slot until its timeout and `make` starves; rescheduled, it gives
    the slot back between pokes, `make` runs meanwhile and the sensor then succeeds."""
    with store.session() as session:
        pools.set_pool(session, "single", 1)
    add_dag(
        "one_slot",
        f"""
        MARK = {str(tmp_path / "mark")!r}
        {GIVE_UP_SOURCE}

        def make():
            record("make")
            open(MARK, "w").close()

        def present():
            record("poke")
            return os.path.exists(MARK)

        with DAG("one_slot", schedule=None, dagrun_timeout=GIVE_UP):
            PythonSensor(task_id="wait", python_callable=present, pool="single",
                         priority_weight=10, poke_interval=0.3, timeout=5, mode={mode!r})
            PythonOperator(task_id="make", python_callable=make, pool="single")
        """,
    )
    run_id = trigger(store, "one_slot")
    drain(store, loop_config)
    spans = entries(ledger)
    make = next(s for s in spans if s["task"] == "make")
    poke_times = [s["start"] for s in spans if s["task"] == "poke"]
    wait = moves(store, "one_slot", "wait")
    if mode == "poke":  # starved: `make` only ran once the sensor had given up
        assert states(store, "one_slot", run_id) == {"wait": "failed", "make": "success"}
        assert "Sensor has timed out" in tries(store, "one_slot", "wait")[0].error
        assert make["start"] > max(poke_times)
        assert make["start"] >= wait[-1][3].timestamp()  # after running -> failed
        assert run_state(store, "one_slot", run_id) == "failed"
        return
    assert states(store, "one_slot", run_id) == {"wait": "success", "make": "success"}
    assert run_state(store, "one_slot", run_id) == "success"
    rescheduled = [at for old, new, _, at in wait if (old, new) == ("running", "up_for_reschedule")]
    assert rescheduled, wait
    assert ("up_for_reschedule", "scheduled") in [(old, new) for old, new, _, _ in wait]
    assert wait[-1][:2] == ("running", "success")
    # `make` ran while the sensor waited between pokes, and before its last poke
    assert rescheduled[0].timestamp() <= make["start"] < make["end"] <= max(poke_times)
    (attempt,) = tries(store, "one_slot", "wait")  # one try, however many pokes
    assert (attempt.try_number, attempt.state) == (1, "success")


def test_timeout_counts_across_pokes_and_execution_timeout_limits_each_poke(
    store, loop_config, add_dag, tmp_path
):
    """`timeout` runs from the first poke of the try, through reschedules, and fails the
    sensor for good (retries left or not) or skips it with soft_fail; `execution_timeout`
    only limits each poke, so a sensor rescheduled for longer than it still succeeds."""
    add_dag(
        "sensor_timeouts",
        counter_source(tmp_path / "count")
        + textwrap.dedent(
            """
        with DAG("sensor_timeouts", schedule=None, dagrun_timeout=GIVE_UP):
            short = timedelta(seconds=0.5)  # below the poke interval and the waits below
            # each poke takes 0.3 s of the 0.5 s limit: together they take far more
            PythonSensor(task_id="patient", python_callable=lambda: slow_pokes() >= 3,
                         mode="reschedule", poke_interval=1, execution_timeout=short)
            PythonSensor(task_id="late", python_callable=lambda: False, mode="reschedule",
                         poke_interval=0.3, timeout=1.5, execution_timeout=short, retries=2,
                         retry_delay=timedelta(0))
            PythonSensor(task_id="optional", python_callable=lambda: False, mode="reschedule",
                         poke_interval=0.3, timeout=1.5, soft_fail=True)
            PythonSensor(task_id="stuck", python_callable=lambda: time.sleep(30),
                         mode="reschedule", execution_timeout=short)
        """
        ),
    )
    run_id = trigger(store, "sensor_timeouts")
    drain(store, loop_config)
    assert states(store, "sensor_timeouts", run_id) == {
        "patient": "success",
        "late": "failed",
        "optional": "skipped",
        "stuck": "failed",
    }
    (patient,) = tries(store, "sensor_timeouts", "patient")
    assert patient.duration >= 2.0 > 0.5  # three pokes a second apart, each under 0.5 s
    assert "timed out" not in Path(patient.log_path).read_text()
    (late,) = tries(store, "sensor_timeouts", "late")  # no retry after the sensor timeout
    assert (late.try_number, late.state) == (1, "failed")
    assert "task 'late': Sensor has timed out" in late.error
    assert late.end_date - late.start_date >= timedelta(seconds=1.5)
    late_moves = moves(store, "sensor_timeouts", "late")
    assert [m[:2] for m in late_moves].count(("running", "up_for_reschedule")) >= 2
    assert {m[2] for m in late_moves if m[1] == "up_for_reschedule"} == {1}
    (stuck,) = tries(store, "sensor_timeouts", "stuck")  # one poke longer than its limit
    assert "task 'stuck' timed out after 0.5 s (execution_timeout)" in stuck.error
    (optional,) = tries(store, "sensor_timeouts", "optional")
    assert optional.state == "skipped" and "timed out" in optional.error


def test_reschedules_use_no_retry_and_each_try_keeps_one_log_of_its_pokes(
    store, loop_config, add_dag, tmp_path
):
    """Pokes 1-2 are try 1 (poke 2 raises: a real failure, retried), pokes 3-4 try 2. The
    reschedules in between use no retry, and each try's log holds all its pokes."""
    add_dag(
        "flaky_sensor",
        counter_source(tmp_path / "count")
        + textwrap.dedent(
            """
        def check():
            n = pokes()
            if n == 2:
                raise ConnectionError("lost the share")
            return n >= 4

        with DAG("flaky_sensor", schedule=None, dagrun_timeout=GIVE_UP):
            PythonSensor(task_id="wait", python_callable=check, mode="reschedule",
                         poke_interval=0.2, retries=1, retry_delay=timedelta(0))
        """
        ),
    )
    run_id = trigger(store, "flaky_sensor")
    drain(store, loop_config)
    assert states(store, "flaky_sensor", run_id) == {"wait": "success"}
    first, second = tries(store, "flaky_sensor", "wait")
    assert (first.try_number, first.state, second.try_number, second.state) == (
        1, "up_for_retry", 2, "success",
    )  # fmt: skip
    assert "ConnectionError: lost the share" in first.error
    first_log, second_log = Path(first.log_path).read_text(), Path(second.log_path).read_text()
    assert Path(first.log_path).name == "attempt=1.log"
    assert Path(second.log_path).name == "attempt=2.log"
    assert ("poke #1" in first_log, "poke #2" in first_log) == (True, True)
    assert "poke #3" in second_log and "poke #4" in second_log and "poke #2" not in second_log
    assert "poking again: attempt 1" in first_log and "poking again: attempt 2" in second_log
    rescheduled = [
        m[2] for m in moves(store, "flaky_sensor", "wait") if m[1] == "up_for_reschedule"
    ]
    assert rescheduled == [1, 2]  # one reschedule in each try, recorded under its try
    row = task_row(store, "flaky_sensor", run_id, "wait")
    assert (row["state"], row["try_number"]) == ("success", 2)
    assert row["start_date"] == second.start_date  # the try's first poke, kept through it
    wall = (row["end_date"] - row["start_date"]).total_seconds()
    assert row["duration"] == pytest.approx(wall, abs=0.05)  # from the try's first poke
    with store.session() as session:
        assert session.execute(select(TaskInstance.max_tries)).scalar_one() == 1


# -- between two pokes, looked at from outside ----------------------------------------------


@pytest.fixture
def stub_scheduler(store, loop_config):
    stub = StubExecutor()
    scheduler = Scheduler(store, loop_config.with_overrides(scheduler__loop_interval=0), stub)
    scheduler.start()
    return scheduler, stub


def work(store, config, stub: StubExecutor, task_id: str) -> TaskState:
    """Run the held attempt of `task_id` in this process as a worker would, then report it."""
    (ti_id,) = [ti_id for ti_id, request in stub.held.items() if request.task_id == task_id]
    state = run_here(store, config, stub.held[ti_id], DagCache().load).state
    stub.finish(ti_id, state)
    return state


def ti_of(store, dag_id: str, task_id: str) -> TaskInstance:
    with store.session() as session:
        row = session.execute(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.task_id == task_id
            )
        ).scalar_one()
        session.expunge(row)
    return row


def test_between_pokes_the_sensor_holds_no_slot_and_is_explained_and_counted(
    store, loop_config, add_dag, stub_scheduler, backend
):
    scheduler, stub = stub_scheduler
    with store.session() as session:
        pools.set_pool(session, "single", 1)
    add_dag(
        "between",
        """
        with DAG("between", schedule=None):
            PythonSensor(task_id="wait", python_callable=lambda: False, mode="reschedule",
                         poke_interval=600, pool="single", priority_weight=10)
            EmptyOperator(task_id="other", pool="single")
        """,
    )
    run_id = trigger(store, "between")
    now = datetime.now(UTC)
    report = scheduler.tick(now)
    assert [r.task_id for r in stub.held.values()] == ["wait"]
    assert report.starving == {"single": 1}  # `other` waits for the slot the sensor holds

    assert work(store, loop_config, stub, "wait") is TaskState.UP_FOR_RESCHEDULE
    report = scheduler.tick(now)
    assert [r.task_id for r in stub.held.values()] == ["other"]  # the slot was given back
    assert report.starving == {}
    sensor = ti_of(store, "between", "wait")
    assert sensor.state == "up_for_reschedule"
    due = sensor.next_retry_at
    assert timedelta(seconds=599) < due - sensor.end_date <= timedelta(seconds=600)
    assert why_not_running(store, loop_config, "between", run_id, "wait") == (
        f"sensor waiting for its next poke at {due.isoformat()} (reschedule mode: 1 poke(s) "
        f"in try 1 since {sensor.start_date.isoformat()} found the condition unmet); it holds "
        "no executor or pool slot until then"
    )
    with store.session() as session:
        assert scheduling.occupancy(session).pool_used == {"single": 1}  # `other` alone

    # the metric, as Prometheus scrapes it and as StatsD receives it
    source = metastore_source(store, loop_config)
    backend.add_source(source)
    found = scrape(backend)
    assert found["ti.up_for_reschedule"] == {ti_labels("default", "between", "wait"): 1.0}
    assert found["task_instances"][labels(state="up_for_reschedule")] == 1.0
    assert found["pool.open_slots"][labels(pool="single")] == 0.0  # held by `other` only
    udp = UdpReceiver()
    statsd = Stats([StatsdBackend("127.0.0.1", udp.port, "dagwatch", "none")], strict=True)
    try:
        GaugePusher(source, statsd).push_once()
        statsd.flush()
        lines: list[str] = []
        while not any(line.startswith("dagwatch.ti.up_for_reschedule.") for line in lines):
            lines.extend(udp.lines(1))
    finally:
        statsd.close()
        udp.sock.close()
    assert "dagwatch.ti.up_for_reschedule.default.between.wait:1|g" in lines

    # not due yet: it stays; due: scheduled, and then it waits for the pool like any task
    scheduler.tick(due - timedelta(seconds=1))
    assert states(store, "between", run_id)["wait"] == "up_for_reschedule"
    scheduler.tick(due + timedelta(seconds=1))
    assert states(store, "between", run_id)["wait"] == "scheduled"
    assert why_not_running(store, loop_config, "between", run_id, "wait") == (
        "pool 'single' is full: it needs 1 open slot(s)"
    )
    assert work(store, loop_config, stub, "other") is TaskState.SUCCESS
    scheduler.tick(due + timedelta(seconds=2))
    assert [r.task_id for r in stub.held.values()] == ["wait"]
    assert work(store, loop_config, stub, "wait") is TaskState.UP_FOR_RESCHEDULE
    sensor_again = ti_of(store, "between", "wait")
    assert (sensor_again.try_number, sensor_again.start_date) == (1, sensor.start_date)
    assert "2 poke(s) in try 1" in why_not_running(store, loop_config, "between", run_id, "wait")


def test_a_cleared_or_timed_out_run_ends_the_open_try_of_a_waiting_sensor(
    store, loop_config, add_dag, stub_scheduler
):
    scheduler, stub = stub_scheduler
    add_dag(
        "ended",
        """
        with DAG("ended", schedule=None, dagrun_timeout=timedelta(hours=1)):
            PythonSensor(task_id="wait", python_callable=lambda: False, mode="reschedule",
                         poke_interval=600)
        """,
    )
    run_id = trigger(store, "ended")
    now = datetime.now(UTC)
    scheduler.tick(now)
    work(store, loop_config, stub, "wait")
    (waiting,) = tries(store, "ended", "wait")
    assert (waiting.state, waiting.end_date) == ("up_for_reschedule", None)  # open

    # cleared between pokes: that try ends, the next poke starts try 2 with a fresh timeout
    api.clear_task_instances(store, "ended", run_id=run_id, actor="test")
    (cleared,) = tries(store, "ended", "wait")
    assert cleared.end_date is not None and cleared.error == "cleared by test"
    scheduler.tick(datetime.now(UTC))
    assert work(store, loop_config, stub, "wait") is TaskState.UP_FOR_RESCHEDULE
    first, second = tries(store, "ended", "wait")
    assert second.try_number == 2 and second.start_date > first.start_date

    # the run times out while the sensor waits: skipped, and its try closed as skipped
    scheduler.tick(now + timedelta(hours=2))
    assert states(store, "ended", run_id) == {"wait": "skipped"}
    assert run_state(store, "ended", run_id) == "failed"
    second = tries(store, "ended", "wait")[1]
    assert (second.state, second.error) == ("skipped", "dagrun_timeout of 1:00:00 exceeded")
    assert second.end_date is not None


def test_a_poke_lost_or_refused_before_it_started_ends_the_try_it_would_continue(
    store, loop_config, add_dag, stub_scheduler
):
    """The next poke is queued, then its process dies (or it cannot start): that is a failed
    try 1, retried as try 2, not a try 2 of its own."""
    scheduler, stub = stub_scheduler
    add_dag(
        "lost_poke",
        """
        with DAG("lost_poke", schedule=None):
            PythonSensor(task_id="wait", python_callable=lambda: False, mode="reschedule",
                         poke_interval=0.001, retries=1, retry_delay=timedelta(hours=1))
        """,
    )
    run_id = trigger(store, "lost_poke")
    scheduler.tick(datetime.now(UTC))
    work(store, loop_config, stub, "wait")
    scheduler.tick(datetime.now(UTC) + timedelta(seconds=1))  # due: the next poke is queued
    (ti_id,) = list(stub.held)
    stub.finish(ti_id, None, exit_code=-9)  # died while queued, before recording anything
    scheduler.tick(datetime.now(UTC) + timedelta(seconds=1))
    sensor = ti_of(store, "lost_poke", "wait")
    assert (sensor.state, sensor.try_number) == ("up_for_retry", 1)
    (first,) = tries(store, "lost_poke", "wait")
    assert (first.state, first.end_date is not None) == ("up_for_retry", True)
    assert "exited with code -9" in first.error

    # try 2 pokes once, then its next poke cannot even start: try 2 fails, closed
    scheduler.tick(datetime.now(UTC) + timedelta(hours=2))
    assert work(store, loop_config, stub, "wait") is TaskState.UP_FOR_RESCHEDULE
    scheduler.tick(datetime.now(UTC) + timedelta(hours=2))
    (ti_id,) = list(stub.held)
    assert fail_unstarted(store, ti_id, "importing the DAG file failed") is TaskState.FAILED
    second = tries(store, "lost_poke", "wait")[1]
    assert (second.try_number, second.state) == (2, "failed")
    assert second.error == "importing the DAG file failed" and second.end_date is not None
    assert states(store, "lost_poke", run_id) == {"wait": "failed"}
