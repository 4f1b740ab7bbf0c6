"""The scheduler's step, `tick(now)`, with a fake clock and a stub executor.

Attempts are completed by the test the way a worker would (running → outcome through the
write path, then an executor event), so every decision of the scheduler is visible.
"""

from __future__ import annotations

import logging
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from engine.clock import FakeClock
from engine.execution.base import CallbackRequest
from engine.execution.stub import StubExecutor
from engine.parsing.parser import process_folders
from engine.scheduling.scheduler import GAUGE_INTERVAL, Scheduler
from engine.states import DagRunState, TaskState
from engine.store import pools, runs, transitions
from engine.store.models import DagRun, Job, TaskInstance, TaskTry
from metrics.testing import MemoryBackend

T0 = datetime(2026, 1, 10, 12, tzinfo=UTC)


@pytest.fixture
def sched_config(config):
    return config.with_overrides(
        core__load_examples=False,
        core__dags_are_paused_at_creation=False,
        scheduler__loop_interval=0,
    )


@pytest.fixture
def add_dag(store, sched_config):
    folder = sched_config["core.dags_folder"]
    folder.mkdir(parents=True, exist_ok=True)

    def _add(name: str, source: str) -> None:
        header = "import pendulum\nfrom datetime import timedelta\nfrom engine import *\n"
        (folder / f"{name}.py").write_text(header + textwrap.dedent(source))
        report = process_folders(store, sched_config)
        assert report.import_errors == 0, [r.error for r in report.results]

    return _add


@pytest.fixture
def make_scheduler(store, sched_config, fake_clock):
    """Start a scheduler on a stub executor; its clock is `fake_clock` unless given one."""

    def _make(parallelism: int = 32, clock: FakeClock | None = None, **overrides):
        stub = StubExecutor(parallelism)
        config = sched_config.with_overrides(**overrides) if overrides else sched_config
        scheduler = Scheduler(store, config, stub, clock=clock or fake_clock)
        scheduler.start()
        return scheduler, stub

    return _make


def trigger(store, dag_id: str, when: datetime = T0, conf=None) -> str:
    from engine.store import dags as dag_store

    with store.session() as session:
        serialized = dag_store.get_dag(session, dag_id).serialized
        run_id = f"manual__{when.isoformat()}"
        runs.create_dag_run(
            session,
            serialized,
            run_id=run_id,
            run_type="manual",
            logical_date=when,
            data_interval=(when, when),
            conf=conf,
            state=DagRunState.QUEUED,
            now=when,
        )
    return run_id


def tis(store, dag_id: str, run_id: str) -> dict[str, TaskInstance]:
    with store.session() as session:
        rows = runs.get_task_instances(session, dag_id, run_id)
        session.expunge_all()
    return {row.task_id: row for row in rows}


def states(store, dag_id: str, run_id: str) -> dict[str, str]:
    return {task_id: ti.state for task_id, ti in tis(store, dag_id, run_id).items()}


def complete(store, stub, ti_id: int, state: TaskState, now: datetime = T0, **values) -> None:
    """What a worker does: queued → running → outcome, then the executor's event."""
    with store.session() as session:
        ti = session.get(TaskInstance, ti_id)
        transitions.transition_task_instance(
            session,
            ti_id,
            expected=TaskState.QUEUED,
            to=TaskState.RUNNING,
            at=now,
            try_number=ti.try_number + 1,
            last_heartbeat=now,
        )
        transitions.transition_task_instance(
            session, ti_id, expected=TaskState.RUNNING, to=state, at=now, end_date=now, **values
        )
    stub.finish(ti_id, state)


def queued_ids(stub) -> list[str]:
    return [request.task_id for request in stub.held.values()]


def test_a_finished_task_queues_its_downstream_on_the_next_tick(store, add_dag, make_scheduler):
    add_dag(
        "chain",
        """
        with DAG("chain", schedule=None):
            chain(*[EmptyOperator(task_id=f"t{i}") for i in range(4)])
        """,
    )
    scheduler, stub = make_scheduler(scheduler__loop_interval=3600)
    run_id = trigger(store, "chain")
    scheduler.tick(T0)  # full pass: run started, t0 scheduled and queued
    assert queued_ids(stub) == ["t0"]
    for i in range(4):
        (ti_id,) = list(stub.held)
        complete(store, stub, ti_id, TaskState.SUCCESS)
        report = scheduler.tick(T0)  # not a full pass: the event marks the run dirty
        if i < 3:
            assert queued_ids(stub) == [f"t{i + 1}"], report
    assert set(states(store, "chain", run_id).values()) == {"success"}
    with store.session() as session:
        assert session.execute(select(DagRun.state)).scalar_one() == "success"


def test_cron_catchup_creates_every_missed_interval_once(store, add_dag, make_scheduler):
    add_dag(
        "daily",
        """
        with DAG("daily", schedule="0 0 * * *", catchup=True,
                 start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
            EmptyOperator(task_id="t")
        """,
    )
    scheduler, _ = make_scheduler()
    now = datetime(2026, 1, 4, 12, tzinfo=UTC)
    scheduler.tick(now)
    scheduler.tick(now)
    with store.session() as session:
        dates = session.execute(select(DagRun.logical_date).order_by(DagRun.logical_date))
        got = [d.isoformat() for d in dates.scalars()]
    assert got == [
        "2026-01-01T00:00:00+00:00",
        "2026-01-02T00:00:00+00:00",
        "2026-01-03T00:00:00+00:00",
    ]


def test_without_catchup_only_the_latest_interval_runs(store, add_dag, make_scheduler):
    add_dag(
        "latest",
        """
        with DAG("latest", schedule="@daily", catchup=False,
                 start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
            EmptyOperator(task_id="t")
        """,
    )
    scheduler, _ = make_scheduler()
    scheduler.tick(datetime(2026, 1, 4, 12, tzinfo=UTC))
    with store.session() as session:
        run = session.execute(select(DagRun)).scalar_one()
    assert run.logical_date == datetime(2026, 1, 3, tzinfo=UTC)
    assert run.data_interval_end == datetime(2026, 1, 4, tzinfo=UTC)
    assert run.run_type == "scheduled" and run.state == "running"


def test_cron_in_a_timezone_across_the_dst_change(store, add_dag, make_scheduler):
    add_dag(
        "amsterdam",
        """
        with DAG("amsterdam", schedule="0 0 * * *", catchup=True,
                 start_date=pendulum.datetime(2026, 3, 27, tz="Europe/Amsterdam")):
            EmptyOperator(task_id="t")
        """,
    )
    scheduler, _ = make_scheduler()
    scheduler.tick(datetime(2026, 3, 31, 12, tzinfo=UTC))
    with store.session() as session:
        rows = session.execute(select(DagRun).order_by(DagRun.logical_date)).scalars().all()
    # Local midnight each day: 23:00 UTC in winter time, 22:00 UTC from 29 March on.
    assert [(r.logical_date.isoformat(), r.data_interval_end.isoformat()) for r in rows] == [
        ("2026-03-26T23:00:00+00:00", "2026-03-27T23:00:00+00:00"),
        ("2026-03-27T23:00:00+00:00", "2026-03-28T23:00:00+00:00"),
        ("2026-03-28T23:00:00+00:00", "2026-03-29T22:00:00+00:00"),
        ("2026-03-29T22:00:00+00:00", "2026-03-30T22:00:00+00:00"),
    ]


def test_end_date_stops_creating_runs(store, add_dag, make_scheduler):
    add_dag(
        "ending",
        """
        with DAG("ending", schedule="@daily", catchup=True,
                 start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
                 end_date=pendulum.datetime(2026, 1, 2, tz="UTC")):
            EmptyOperator(task_id="t")
        """,
    )
    scheduler, _ = make_scheduler()
    scheduler.tick(datetime(2026, 2, 1, tzinfo=UTC))
    with store.session() as session:
        assert session.execute(select(DagRun.run_id)).scalars().all() == [
            "scheduled__2026-01-01T00:00:00+00:00",
            "scheduled__2026-01-02T00:00:00+00:00",
        ]


def test_max_active_runs_admits_runs_as_others_finish(store, add_dag, make_scheduler):
    add_dag(
        "limited_runs",
        """
        with DAG("limited_runs", schedule="@daily", catchup=True, max_active_runs=2,
                 start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
            EmptyOperator(task_id="t")
        """,
    )
    scheduler, stub = make_scheduler()
    now = datetime(2026, 1, 6, tzinfo=UTC)  # five intervals are due
    seen_running = []
    for _ in range(10):
        scheduler.tick(now)
        with store.session() as session:
            states_now = session.execute(select(DagRun.state)).scalars().all()
        seen_running.append(states_now.count("running"))
        for ti_id in list(stub.held):
            complete(store, stub, ti_id, TaskState.SUCCESS, now)
    assert max(seen_running) == 2
    with store.session() as session:
        assert session.execute(select(DagRun.state)).scalars().all() == ["success"] * 5


@pytest.mark.parametrize(
    ("overrides", "pool_slots", "extra", "expected_queued", "reason"),
    [
        ({"parallelism": 2}, None, "", 2, "core.parallelism"),
        ({}, 2, "pool='small'", 2, "pool 'small' is full"),
        ({}, None, "", 3, "max_active_tasks"),
    ],
    ids=["parallelism", "pool", "max_active_tasks"],
)
def test_limits_hold_back_the_rest_and_say_why(
    store, add_dag, make_scheduler, overrides, pool_slots, extra, expected_queued, reason
):
    if pool_slots:
        with store.session() as session:
            pools.set_pool(session, "small", pool_slots)
    max_tasks = 3 if reason == "max_active_tasks" else 16
    add_dag(
        "wide",
        f"""
        with DAG("wide", schedule=None, max_active_tasks={max_tasks}):
            for i in range(6):
                EmptyOperator(task_id=f"t{{i}}", {extra})
        """,
    )
    scheduler, stub = make_scheduler(**overrides)
    trigger(store, "wide")
    report = scheduler.tick(T0)
    assert len(stub.held) == expected_queued
    assert len(report.waiting) == 6 - expected_queued
    assert all(reason in text for text in report.waiting.values()), report.waiting


def test_max_active_tis_per_dag_spans_runs(store, add_dag, make_scheduler):
    add_dag(
        "one_at_a_time",
        """
        with DAG("one_at_a_time", schedule=None):
            EmptyOperator(task_id="t", max_active_tis_per_dag=1)
        """,
    )
    scheduler, stub = make_scheduler()
    trigger(store, "one_at_a_time", T0)
    trigger(store, "one_at_a_time", T0 + timedelta(hours=1))
    report = scheduler.tick(T0)
    assert len(stub.held) == 1
    assert list(report.waiting.values()) == ["task 't' is at max_active_tis_per_dag"]


def test_priority_weight_orders_the_queue(store, add_dag, make_scheduler):
    add_dag(
        "prio",
        """
        with DAG("prio", schedule=None):
            for name, weight in [("low", 1), ("high", 10), ("mid", 5)]:
                EmptyOperator(task_id=name, priority_weight=weight)
        """,
    )
    scheduler, stub = make_scheduler(parallelism=1)
    trigger(store, "prio")
    order = []
    for _ in range(3):
        scheduler.tick(T0)
        (ti_id,) = list(stub.held)
        order.append(stub.held[ti_id].task_id)
        complete(store, stub, ti_id, TaskState.SUCCESS)
    assert order == ["high", "mid", "low"]


def test_a_task_that_can_never_fit_its_pool_is_reported(store, add_dag, make_scheduler, caplog):
    add_dag(
        "too_big",
        """
        with DAG("too_big", schedule=None):
            EmptyOperator(task_id="huge", pool_slots=500)
        """,
    )
    scheduler, stub = make_scheduler()
    trigger(store, "too_big")
    with caplog.at_level(logging.ERROR, logger="engine.scheduling.scheduler"):
        report = scheduler.tick(T0)
        scheduler.tick(T0)
    assert not stub.held
    (text,) = report.waiting.values()
    assert "can never run: it needs 500 slots of pool 'default_pool', which has only 128" in text
    assert sum("can never run" in r.getMessage() for r in caplog.records) == 1  # said once


def test_retry_waits_for_its_delay(store, add_dag, make_scheduler):
    add_dag(
        "retry",
        """
        with DAG("retry", schedule=None):
            EmptyOperator(task_id="t", retries=2, retry_delay=timedelta(minutes=5))
        """,
    )
    scheduler, stub = make_scheduler()
    run_id = trigger(store, "retry")
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)
    complete(store, stub, ti_id, TaskState.UP_FOR_RETRY, next_retry_at=T0 + timedelta(minutes=5))
    scheduler.tick(T0 + timedelta(minutes=4))
    assert not stub.held and states(store, "retry", run_id) == {"t": "up_for_retry"}
    scheduler.tick(T0 + timedelta(minutes=5))
    assert queued_ids(stub) == ["t"]


def test_depends_on_past_waits_for_the_previous_run(store, add_dag, make_scheduler):
    add_dag(
        "past",
        """
        with DAG("past", schedule=None):
            EmptyOperator(task_id="t", depends_on_past=True)
        """,
    )
    scheduler, stub = make_scheduler()
    first = trigger(store, "past", T0)
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)
    complete(store, stub, ti_id, TaskState.FAILED)
    second = trigger(store, "past", T0 + timedelta(days=1))
    scheduler.tick(T0)
    scheduler.tick(T0)
    assert states(store, "past", first) == {"t": "failed"}
    assert states(store, "past", second) == {"t": "none"}
    assert not stub.held


def test_zombie_is_failed_or_retried_and_its_attempt_closed(store, add_dag, make_scheduler):
    add_dag(
        "zombie",
        """
        with DAG("zombie", schedule=None):
            EmptyOperator(task_id="t", retries=1, retry_delay=timedelta(seconds=0))
        """,
    )
    clock = FakeClock(T0)
    scheduler, stub = make_scheduler(clock=clock, scheduler__heartbeat_timeout=30)
    run_id = trigger(store, "zombie")
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)
    stub.held.clear()  # the worker is gone without a word (SIGKILL, lost host)
    with store.session() as session:
        transitions.transition_task_instance(
            session, ti_id, expected=TaskState.QUEUED, to=TaskState.RUNNING, at=T0,
            try_number=1, last_heartbeat=T0,
        )  # fmt: skip
        ti = session.get(TaskInstance, ti_id)
        runs.start_try(session, ti, hostname="h", pid=1, log_path="x", now=T0)
    clock.set(T0 + timedelta(seconds=20))  # housekeeping is due (every 5 s)
    report = scheduler.tick(clock.now())
    assert report.zombies == 0
    clock.set(T0 + timedelta(seconds=31))
    report = scheduler.tick(clock.now())
    assert report.zombies == 1
    assert states(store, "zombie", run_id) == {"t": "up_for_retry"}
    with store.session() as session:
        attempt = session.execute(select(TaskTry)).scalar_one()
    assert attempt.state == "up_for_retry" and "zombie" in attempt.error


def test_a_lost_attempt_is_failed_at_once(store, add_dag, make_scheduler):
    add_dag(
        "lost",
        """
        with DAG("lost", schedule=None):
            EmptyOperator(task_id="t") >> EmptyOperator(task_id="after")
        """,
    )
    scheduler, stub = make_scheduler()
    run_id = trigger(store, "lost")
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)
    stub.finish(ti_id, None, exit_code=-9)  # died while queued, before recording anything
    scheduler.tick(T0)
    assert states(store, "lost", run_id) == {"t": "failed", "after": "upstream_failed"}
    with store.session() as session:
        assert session.execute(select(DagRun.state)).scalar_one() == "failed"


def test_dagrun_timeout_fails_the_run_and_stops_its_tasks(store, add_dag, make_scheduler):
    add_dag(
        "slow_run",
        """
        with DAG("slow_run", schedule=None, dagrun_timeout=timedelta(minutes=10),
                 on_failure_callback=lambda context: None):
            EmptyOperator(task_id="first") >> EmptyOperator(task_id="second")
        """,
    )
    scheduler, stub = make_scheduler()
    run_id = trigger(store, "slow_run")
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)
    scheduler.tick(T0 + timedelta(minutes=11))
    assert states(store, "slow_run", run_id) == {"first": "queued", "second": "skipped"}
    assert stub.terminated == [(ti_id, "dagrun_timeout of 0:10:00 exceeded")]
    assert stub.callbacks == [
        CallbackRequest(
            "slow_run",
            run_id,
            stub.history[0].fileloc,
            "on_failure_callback",
            reason="dagrun_timeout of 0:10:00 exceeded",
        )
    ]
    with store.session() as session:
        assert session.execute(select(DagRun.state)).scalar_one() == "failed"


def test_dagrun_timeout_skips_a_task_waiting_for_its_retry(store, add_dag, make_scheduler):
    add_dag(
        "retry_then_timeout",
        """
        with DAG("retry_then_timeout", schedule=None, dagrun_timeout=timedelta(minutes=10)):
            EmptyOperator(task_id="t", retries=1, retry_delay=timedelta(hours=1))
        """,
    )
    scheduler, stub = make_scheduler()
    run_id = trigger(store, "retry_then_timeout")
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)
    complete(store, stub, ti_id, TaskState.UP_FOR_RETRY, next_retry_at=T0 + timedelta(hours=1))
    scheduler.tick(T0)
    assert states(store, "retry_then_timeout", run_id) == {"t": "up_for_retry"}
    scheduler.tick(T0 + timedelta(minutes=11))
    assert states(store, "retry_then_timeout", run_id) == {"t": "skipped"}
    with store.session() as session:
        assert session.execute(select(DagRun.state)).scalar_one() == "failed"


def test_paused_dag_runs_wait_until_unpaused(store, add_dag, make_scheduler):
    from engine.store import dags as dag_store

    add_dag(
        "pausable",
        """
        with DAG("pausable", schedule=None):
            EmptyOperator(task_id="t")
        """,
    )
    with store.session() as session:
        dag_store.set_paused(session, "pausable", True)
    scheduler, stub = make_scheduler()
    trigger(store, "pausable")
    scheduler.tick(T0)
    assert not stub.held
    with store.session() as session:
        dag_store.set_paused(session, "pausable", False)
    scheduler.tick(T0)
    assert queued_ids(stub) == ["t"]


def test_orphaned_queued_attempts_are_reset_on_start(store, add_dag, make_scheduler):
    add_dag(
        "orphans",
        """
        with DAG("orphans", schedule=None):
            EmptyOperator(task_id="t")
        """,
    )
    first, _ = make_scheduler()
    run_id = trigger(store, "orphans")
    first.tick(T0)
    assert states(store, "orphans", run_id) == {"t": "queued"}
    # The first scheduler dies; a new one starts and finds the attempt never started. (On
    # PostgreSQL, where several schedulers may run, it knows the first is gone by its
    # heartbeat, silent for longer than scheduler_health_check_threshold.)
    later = T0 + timedelta(seconds=31)
    second, stub2 = make_scheduler(clock=FakeClock(later))
    assert states(store, "orphans", run_id) == {"t": "scheduled"}
    second.tick(later)
    assert queued_ids(stub2) == ["t"]


def test_why_not_running_gives_the_schedulers_reason(store, add_dag, make_scheduler, sched_config):
    from engine.scheduling.explain import why_not_running

    with store.session() as session:
        pools.set_pool(session, "single", 1)
    add_dag(
        "explained",
        """
        with DAG("explained", schedule=None, max_active_runs=1):
            first = EmptyOperator(task_id="first", pool="single")
            other = EmptyOperator(task_id="other", pool="single")
            first >> EmptyOperator(task_id="after")
        """,
    )
    scheduler, stub = make_scheduler()
    run_id = trigger(store, "explained")
    second_run = trigger(store, "explained", T0 + timedelta(days=1))
    scheduler.tick(T0)

    def why(task_id: str, run: str = run_id) -> str:
        return why_not_running(store, sched_config, "explained", run, task_id)

    held = {request.task_id for request in stub.held.values()}
    waiting = ({"first", "other"} - held).pop()
    assert held == {"first", "other"} - {waiting}
    assert why(waiting) == "pool 'single' is full: it needs 1 open slot(s)"
    assert why(held.pop()) == "queued"
    assert why("after").startswith("trigger rule all_success is not met yet: waiting for upstream")
    assert why("first", second_run) == (
        "run limit: the run is queued, DAG 'explained' is at max_active_runs (1)"
    )


def test_a_lost_process_does_not_fail_an_attempt_it_does_not_own(store, add_dag, make_scheduler):
    add_dag(
        "owned",
        """
        with DAG("owned", schedule=None):
            EmptyOperator(task_id="t")
        """,
    )
    scheduler, stub = make_scheduler()
    run_id = trigger(store, "owned")
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)
    with store.session() as session:  # another process claimed the attempt (pid 4242)
        transitions.transition_task_instance(
            session, ti_id, expected=TaskState.QUEUED, to=TaskState.RUNNING, at=T0,
            try_number=1, pid=4242, last_heartbeat=T0,
        )  # fmt: skip
    stub.finish(ti_id, None, exit_code=1, pid=999)  # the process that lost the claim
    scheduler.tick(T0)
    assert states(store, "owned", run_id) == {"t": "running"}


def test_the_tick_report_counts_slots_per_pool(store, add_dag, make_scheduler):
    with store.session() as session:
        pools.set_pool(session, "three", 3)
    add_dag(
        "counted",
        """
        with DAG("counted", schedule=None):
            for i in range(4):
                EmptyOperator(task_id=f"t{i}", pool="three")
        """,
    )
    scheduler, stub = make_scheduler()
    trigger(store, "counted")
    first = scheduler.tick(T0)
    assert (first.executable, first.queued, first.starving) == (3, 3, {"three": 1})
    ti_id = next(iter(stub.held))
    with store.session() as session:
        transitions.transition_task_instance(
            session, ti_id, expected=TaskState.QUEUED, to=TaskState.RUNNING, at=T0, try_number=1
        )
    second = scheduler.tick(T0)
    assert (second.queued_tis, second.running_tis) == (2, 1)
    assert second.open_slots_by_pool == {"default_pool": 128, "three": 0}
    assert second.starving == {"three": 1}


# -- what the step emits (the strict recorder `emitted`, tests/conftest.py) -----------

TAGS = {"dag_id": "m", "task_id": "t"}


def _sum(emitted: MemoryBackend, name: str, **labels: str) -> float:
    return sum(v for got, v in emitted.values(name) if labels.items() <= got.items())


def test_housekeeping_comes_every_five_seconds_of_the_schedulers_clock(
    store, make_scheduler, emitted, fake_clock
):
    """Heartbeats and zombie checks are due by the scheduler's clock, not by real time:
    at the first tick, then once HOUSEKEEPING_INTERVAL (5 s) of that clock has passed."""
    scheduler, _ = make_scheduler()
    beats = []
    for step in (0, 4.9, 0.1, 1, 4):  # ticks at 0, 4.9, 5, 6 and 10 s
        fake_clock.advance(step)
        emitted.clear()
        scheduler.tick()
        beats.append(_sum(emitted, "scheduler_heartbeat"))
    assert beats == [1, 0, 1, 0, 1]
    with store.session() as session:
        job = session.get(Job, scheduler.job_id)
        assert job.latest_heartbeat == T0 + timedelta(seconds=10)


def test_a_zombie_counts_as_a_failed_attempt_without_heartbeat(
    store, add_dag, make_scheduler, emitted, fake_clock
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
    fake_clock.set(T0 + timedelta(seconds=31))  # housekeeping is due (every 5 s)
    scheduler.tick(fake_clock.now())
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
    make_scheduler(clock=FakeClock(T0 + timedelta(seconds=31)))  # the first one's heartbeat is old
    assert emitted.values("scheduler.orphaned_tasks.cleared") == [({}, 1.0)]


def test_a_dead_schedulers_queued_attempts_are_adopted_by_a_live_one(
    store, add_dag, make_scheduler, emitted, fake_clock
):
    add_dag("adopt", 'with DAG("adopt", schedule=None):\n    EmptyOperator(task_id="t")\n')
    first, stub1 = make_scheduler()
    second, stub2 = make_scheduler()
    run_id = trigger(store, "adopt")
    first.tick(T0)
    assert queued_ids(stub1) == ["t"] and not stub2.held
    # the first one is alive (its heartbeat is recent): what it queued stays its own
    fake_clock.set(T0 + timedelta(seconds=5))  # the second one's housekeeping is due
    second.tick(fake_clock.now())
    assert states(store, "adopt", run_id) == {"t": "queued"} and not stub2.held
    # it stops beating: once scheduler_health_check_threshold (30 s) passes, it is failed
    # and its queued attempt is adopted and queued by the second one
    emitted.clear()
    later = T0 + timedelta(seconds=31)
    fake_clock.set(later)
    second.tick(later)
    assert states(store, "adopt", run_id) == {"t": "scheduled"}
    second.tick(later)
    assert queued_ids(stub2) == ["t"]
    assert emitted.values("scheduler.schedulers_lost") == [({}, 1.0)]
    assert emitted.values("scheduler.orphaned_tasks.adopted") == [({}, 1.0)]
    with store.session() as session:
        jobs = {job.id: job.state for job in session.execute(select(Job)).scalars()}
    assert jobs == {first.job_id: "failed", second.job_id: "running"}


def test_a_scheduled_run_reports_its_delays_and_duration(store, add_dag, make_scheduler, emitted):
    add_dag(
        "m",
        """
        with DAG("m", schedule="@hourly", start_date=pendulum.datetime(2026, 1, 10, 10),
                 catchup=False):
            EmptyOperator(task_id="t")
        """,
    )
    clock = FakeClock(T0 + timedelta(minutes=5))  # the 11:00-12:00 interval ended 5 min ago
    scheduler, stub = make_scheduler(clock=clock)
    scheduler.tick(clock.now())
    assert emitted.values("dagrun.schedule_delay") == [({"dag_id": "m"}, 300.0)]
    (ti_id,) = list(stub.held)
    later = clock.now() + timedelta(minutes=2)
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


def test_loop_gauges_describe_slots_and_starving_tasks(
    store, add_dag, make_scheduler, emitted, fake_clock
):
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
    fake_clock.advance(GAUGE_INTERVAL)  # the loop sends its gauges once a second of its clock
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
