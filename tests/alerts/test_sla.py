"""SLA misses and DAG deadlines, raised on the clock by the scheduler's `sla` tick hook."""

from __future__ import annotations

import dataclasses
import json
import textwrap
import threading
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import event, select

from alerts import sla
from alerts.sla import FOLD_REASON, SlaChecker
from engine import hooks
from engine.clock import FakeClock
from engine.execution.stub import StubExecutor
from engine.hooks import TickContext
from engine.parsing.parser import process_folders
from engine.scheduling.scheduler import Scheduler
from engine.states import DagRunState, TaskState
from engine.store import callbacks as callback_store
from engine.store import transitions
from engine.store.models import Alert, CallbackRecord, DagRun, SlaMiss, TaskInstance
from tests.integration import test_scheduler_loop as loop
from tests.integration import test_scheduler_tick as tick
from tests.integration.test_scheduler_tick import T0, complete, tis, trigger

sched_config = tick.sched_config
add_dag = tick.add_dag
loop_config = loop.loop_config

URL = "json://127.0.0.1:9/never-called"
ROUTES = {"oncall": {"urls": [URL]}}


@pytest.fixture
def start_scheduler(store, sched_config):
    """A scheduler as a new process starts one: the alerts plugin installed afresh (so the
    SLA checker remembers nothing), its tick hooks run on every tick of the fake clock.
    Services (the dispatcher) are left out: the outbox rows stay as the checks wrote them."""
    started: list[Scheduler] = []

    def _start(clock: FakeClock, **overrides):
        config = sched_config.with_overrides(alerts__routes=ROUTES, **overrides)
        registry = hooks.install(config)
        every_tick = [dataclasses.replace(hook, interval=0) for hook in registry.tick_hooks]
        stub = StubExecutor()
        scheduler = Scheduler(
            store,
            config,
            stub,
            clock=clock,
            registry=dataclasses.replace(registry, tick_hooks=every_tick, services=[]),
        )
        scheduler.start()
        started.append(scheduler)
        return scheduler, stub

    yield _start
    for scheduler in started:
        scheduler.shutdown(grace=0)


def start_attempt(store, ti_id: int, at: datetime) -> None:
    """What a worker does first: queued -> running."""
    with store.session() as session:
        ti = session.get(TaskInstance, ti_id)
        transitions.transition_task_instance(
            session,
            ti_id,
            expected=TaskState.QUEUED,
            to=TaskState.RUNNING,
            at=at,
            try_number=ti.try_number + 1,
            start_date=at,
            last_heartbeat=at,
        )


def finish_attempt(store, stub, ti_id: int, state: TaskState, at: datetime) -> None:
    with store.session() as session:
        transitions.transition_task_instance(
            session, ti_id, expected=TaskState.RUNNING, to=state, at=at, end_date=at
        )
    stub.finish(ti_id, state)


def misses(store) -> list[tuple]:
    with store.session() as session:
        rows = session.scalars(select(SlaMiss).order_by(SlaMiss.id)).all()
        return [
            (m.kind, m.dag_id, m.task_id, m.deadline, m.detected_at, m.state, m.notified)
            for m in rows
        ]


def alerts(store, event: str | None = None) -> list[Alert]:
    with store.session() as session:
        statement = select(Alert).order_by(Alert.id)
        if event:
            statement = statement.where(Alert.event == event)
        rows = list(session.scalars(statement))
        session.expunge_all()
    return rows


LATE = """
def on_sla_miss(context):
    pass

with DAG("late", schedule=None, description="{description}", sla_miss_callback=on_sla_miss):
    slow = EmptyOperator(task_id="slow", sla=timedelta(seconds=30))
    quick = EmptyOperator(task_id="quick", sla=timedelta(seconds=30))
    [slow, quick] >> EmptyOperator(task_id="after", sla=timedelta(hours=1))
"""


def test_a_task_sla_miss_is_raised_while_the_task_runs_and_never_again(
    store, add_dag, start_scheduler, emitted
):
    add_dag("late", LATE.format(description="v1"))
    clock = FakeClock(T0)
    scheduler, stub = start_scheduler(clock)
    run_id = trigger(store, "late")  # manual: the SLA counts from the queued time, T0
    scheduler.tick(T0)
    ids = {stub.held[i].task_id: i for i in stub.held}
    start_attempt(store, ids["slow"], T0 + timedelta(seconds=1))
    start_attempt(store, ids["quick"], T0 + timedelta(seconds=1))
    finish_attempt(store, stub, ids["quick"], TaskState.SUCCESS, T0 + timedelta(seconds=5))
    for seconds in (5, 29):
        clock.set(T0 + timedelta(seconds=seconds))
        scheduler.tick(clock.now())
    assert misses(store) == []

    clock.set(T0 + timedelta(seconds=31))
    scheduler.tick(clock.now())

    deadline = T0 + timedelta(seconds=30)
    # Only the task still running is late; `quick` ended at T0+5, before its deadline.
    assert misses(store) == [("task_sla", "late", "slow", deadline, clock.now(), "running", True)]
    assert tis(store, "late", run_id)["slow"].end_date is None  # raised before it ended
    (alert,) = alerts(store)
    assert (alert.event, alert.route, alert.status) == ("sla_missed", "oncall", "pending")
    assert (alert.dag_id, alert.run_id, alert.task_id) == ("late", run_id, "slow")
    assert alert.fingerprint == f"sla_missed|oncall|late|{run_id}|slow||task_sla"
    assert alert.payload["state"] == "running" and alert.payload["late_by"] == 1.0
    assert alert.payload["deadline"] == deadline.isoformat()
    assert alert.payload["rule"] == "sla 0:00:30 after the scheduled time"
    assert emitted.values("sla_missed") == [({"dag_id": "late", "task_id": "slow"}, 1.0)]
    (request,) = stub.callbacks
    assert (request.dag_id, request.run_id, request.kind) == ("late", run_id, "sla_miss_callback")
    assert request.reason == (
        f"task slow missed its SLA {deadline.isoformat()} (running)"
    ) and request.fileloc.endswith("late.py")
    with store.session() as session:  # it ran, as an executor records once it has
        callback_store.finish(session, request.request_id, clock.now())

    # Still late on the next ticks, then it ends: nothing more is raised.
    for seconds in (40, 50):
        clock.set(T0 + timedelta(seconds=seconds))
        scheduler.tick(clock.now())
    finish_attempt(store, stub, ids["slow"], TaskState.SUCCESS, T0 + timedelta(seconds=55))
    clock.set(T0 + timedelta(seconds=56))
    scheduler.tick(clock.now())

    # A new scheduler process on the same metastore, then a re-parse of the changed file.
    scheduler, restarted = start_scheduler(clock)
    clock.set(T0 + timedelta(seconds=60))
    scheduler.tick(clock.now())
    add_dag("late", LATE.format(description="v2"))
    clock.set(T0 + timedelta(seconds=70))
    scheduler.tick(clock.now())

    assert [m[:3] for m in misses(store)] == [("task_sla", "late", "slow")]
    assert [a.event for a in alerts(store)] == ["sla_missed"]
    assert emitted.values("sla_missed") == [({"dag_id": "late", "task_id": "slow"}, 1.0)]
    assert len(stub.callbacks) == 1 and restarted.callbacks == []


def test_a_dag_deadline_is_missed_on_the_clock(store, add_dag, start_scheduler, emitted):
    add_dag(
        "etl",
        """
        with DAG("etl", schedule=None,
                 deadline=Deadline(DeadlineReference.DAGRUN_QUEUED_AT, timedelta(minutes=1))):
            EmptyOperator(task_id="extract") >> EmptyOperator(task_id="load")
        """,
    )
    clock = FakeClock(T0)
    scheduler, stub = start_scheduler(clock)
    run_id = trigger(store, "etl")
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)
    start_attempt(store, ti_id, T0 + timedelta(seconds=1))
    clock.set(T0 + timedelta(seconds=59))
    scheduler.tick(clock.now())
    assert misses(store) == [] and emitted.values("deadline.missed") == []

    clock.set(T0 + timedelta(seconds=61))
    scheduler.tick(clock.now())

    assert misses(store) == [
        ("dag_deadline", "etl", "", T0 + timedelta(minutes=1), clock.now(), "running", True)
    ]
    assert emitted.values("deadline.missed") == [({"dag_id": "etl"}, 1.0)]
    assert emitted.values("sla_missed") == []
    (alert,) = alerts(store, "sla_missed")
    assert (alert.run_id, alert.task_id, alert.status) == (run_id, None, "pending")
    assert alert.payload["kind"] == "dag_deadline"
    assert alert.payload["rule"] == "queued at + 0:01:00"
    assert stub.callbacks == []  # the DAG has no sla_miss_callback


def test_the_timedelta_shorthand_counts_from_the_data_interval_end(store, add_dag, start_scheduler):
    add_dag(
        "hourly",
        """
        with DAG("hourly", schedule="@hourly", deadline=timedelta(minutes=30),
                 start_date=pendulum.datetime(2026, 1, 10, tz="UTC")):
            EmptyOperator(task_id="t", sla=timedelta(minutes=10))
        """,
    )
    clock = FakeClock(T0 + timedelta(minutes=5))  # the 11:00-12:00 interval's run is due
    scheduler, _ = start_scheduler(clock)
    scheduler.tick(clock.now())
    with store.session() as session:
        run = session.scalars(select(DagRun)).one()
    assert run.data_interval_end == T0 and run.queued_at == T0 + timedelta(minutes=5)

    clock.set(T0 + timedelta(minutes=31))
    scheduler.tick(clock.now())

    assert [(m[0], m[2], m[3], m[5]) for m in misses(store)] == [
        ("dag_deadline", "", T0 + timedelta(minutes=30), "running"),
        ("task_sla", "t", T0 + timedelta(minutes=10), "queued"),
    ]


FLAKY = """
with DAG("flaky", schedule=None,
         deadline=Deadline(DeadlineReference.DAGRUN_QUEUED_AT, timedelta(minutes=1))):
    EmptyOperator(task_id="load")
"""


@pytest.mark.parametrize("policy", ["fold", "page"])
def test_a_deadline_missed_by_a_run_that_already_failed(
    store, add_dag, start_scheduler, emitted, policy
):
    add_dag("flaky", FLAKY)
    clock = FakeClock(T0)
    scheduler, stub = start_scheduler(clock, alerts__miss_after_failure=policy)
    run_id = trigger(store, "flaky")
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)
    complete(store, stub, ti_id, TaskState.FAILED, T0 + timedelta(seconds=10))
    # The scheduler is down past the deadline; the next one fails the run and sees the miss
    # in the same tick, after the failure alert was written.
    clock.set(T0 + timedelta(minutes=5))
    scheduler, _ = start_scheduler(clock, alerts__miss_after_failure=policy)
    scheduler.tick(clock.now())

    assert [(m[0], m[5]) for m in misses(store)] == [("dag_deadline", "failed")]
    assert emitted.values("deadline.missed") == [({"dag_id": "flaky"}, 1.0)]
    (missed,) = alerts(store, "sla_missed")
    (failure,) = alerts(store, "dag_run_failed")
    assert failure.run_id == run_id and failure.status == "pending"
    if policy == "fold":
        assert (missed.status, missed.last_error) == ("suppressed", FOLD_REASON)
        assert missed.next_attempt_at is None
        assert failure.payload["deadline_missed"] is True
        assert failure.payload["misses"] == [
            {"kind": "dag_deadline", "task_id": None, "deadline": "2026-01-10T12:01:00+00:00"}
        ]
        assert misses(store)[0][6] is False  # no one was told apart from the failure alert
    else:
        assert (missed.status, missed.last_error) == ("pending", None)
        assert "deadline_missed" not in failure.payload
        assert misses(store)[0][6] is True


def test_a_run_that_ended_in_time_is_not_a_miss(store, add_dag, start_scheduler):
    add_dag("flaky", FLAKY)
    clock = FakeClock(T0)
    scheduler, stub = start_scheduler(clock)
    trigger(store, "flaky")
    scheduler.tick(T0)
    (ti_id,) = list(stub.held)
    complete(store, stub, ti_id, TaskState.SUCCESS, T0 + timedelta(seconds=10))
    for seconds in (11, 100, 200):
        clock.set(T0 + timedelta(seconds=seconds))
        scheduler.tick(clock.now())
    with store.session() as session:
        assert session.scalars(select(DagRun.state)).one() == "success"
    assert misses(store) == [] and alerts(store) == []


def wide_dag(folder, width: int) -> None:
    (folder / f"wide_{width}.py").write_text(
        textwrap.dedent(
            f"""
            from datetime import timedelta
            from engine import DAG, EmptyOperator
            with DAG("wide_{width}", schedule=None, deadline=timedelta(minutes=5)):
                first = EmptyOperator(task_id="first", sla=timedelta(minutes=1))
                first >> [EmptyOperator(task_id=f"t{{i}}", sla=timedelta(minutes=1))
                          for i in range({width})]
            """
        )
    )


def test_a_pass_runs_the_same_few_indexed_statements_whatever_the_task_count(
    sqlite_store, sched_config
):
    """The check is batched: statements do not grow with task instances, none scans."""
    counts = []
    for width in (5, 200):
        folder = sched_config["core.dags_folder"]
        folder.mkdir(parents=True, exist_ok=True)
        wide_dag(folder, width)
        process_folders(sqlite_store, sched_config)
        scheduler = Scheduler(sqlite_store, sched_config, StubExecutor(), clock=FakeClock(T0))
        scheduler.start()
        trigger(sqlite_store, f"wide_{width}")
        scheduler.tick(T0)
        checker = SlaChecker({}, sched_config)
        seen: list[tuple[str, object]] = []

        checking_thread = threading.get_ident()

        def record(
            conn, cursor, statement, parameters, context, executemany,
            seen=seen, checking_thread=checking_thread,
        ):  # fmt: skip
            if threading.get_ident() == checking_thread:  # not the services' threads
                seen.append((statement, parameters))

        event.listen(sqlite_store.engine, "before_cursor_execute", record)
        try:
            later = T0 + timedelta(minutes=10)
            checker.check(TickContext(later, sqlite_store, sched_config, scheduler.plan_of))
        finally:
            event.remove(sqlite_store.engine, "before_cursor_execute", record)
        counts.append(len(seen))
        with sqlite_store.session() as session:
            recorded = session.scalars(select(SlaMiss).where(SlaMiss.dag_id == f"wide_{width}"))
            assert len(recorded.all()) == width + 2  # every task and the run's deadline
        with sqlite_store.engine.connect() as connection:
            for statement, parameters in seen:
                if statement.lstrip().upper().startswith("SELECT"):
                    plan = connection.exec_driver_sql(
                        f"EXPLAIN QUERY PLAN {statement}", parameters
                    ).all()
                    scans = [row[-1] for row in plan if row[-1].startswith("SCAN dag_run")]
                    scans += [row[-1] for row in plan if row[-1].startswith("SCAN task_")]
                    assert not scans, statement
    assert counts[0] == counts[1], counts


def test_the_sla_miss_callback_runs_with_the_misses_through_the_real_loop(store, loop_config, home):
    """A task sleeping past its SLA: the miss is recorded while it sleeps, and the DAG's
    sla_miss_callback runs in its own process with the misses in its context."""
    ledger = home / "sla_callback.json"
    folder = loop_config["core.dags_folder"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sleepy.py").write_text(
        textwrap.dedent(
            f"""
            import json, time
            from datetime import timedelta
            from engine import DAG, PythonOperator

            def on_sla_miss(context):
                misses = [{{k: getattr(v, "isoformat", lambda v=v: v)() for k, v in m.items()}}
                          for m in context["sla_misses"]]
                with open({str(ledger)!r}, "w") as out:
                    json.dump({{"reason": context["reason"], "misses": misses}}, out)

            with DAG("sleepy", schedule=None, sla_miss_callback=on_sla_miss):
                PythonOperator(task_id="nap", python_callable=lambda: time.sleep(3),
                               sla=timedelta(seconds=1))
            """
        )
    )
    process_folders(store, loop_config)
    run_id = loop.trigger(store, "sleepy")
    loop.drain(store, loop_config)

    assert loop.run_state(store, "sleepy", run_id) == "success"
    with store.session() as session:
        miss = session.scalars(select(SlaMiss)).one()
        nap = session.scalars(select(TaskInstance)).one()
        queued_at = session.scalars(select(DagRun.queued_at)).one()
    assert (miss.kind, miss.task_id, miss.deadline) == (
        "task_sla",
        "nap",
        queued_at + timedelta(seconds=1),
    )
    assert miss.state in ("queued", "running") and miss.detected_at < nap.end_date
    stop = time.monotonic() + 10
    while not ledger.exists() and time.monotonic() < stop:
        time.sleep(0.05)
    told = json.loads(ledger.read_text())
    assert told["misses"] == [
        {
            "kind": "task_sla",
            "task_id": "nap",
            "deadline": miss.deadline.isoformat(),
            "detected_at": told["misses"][0]["detected_at"],
            "state": miss.state,
        }
    ]
    assert told["reason"].startswith("task nap missed its SLA")
    with store.session() as session:
        record = session.scalars(select(CallbackRecord)).one()
    assert (record.kind, record.status, record.task_id) == ("sla_miss_callback", "success", None)


def test_list_misses_is_newest_first(store):
    with store.session() as session:
        for i, dag_id in enumerate(["a", "b", "a"]):
            session.add(
                SlaMiss(
                    kind="task_sla", dag_id=dag_id, run_id=f"r{i}", task_id="t",
                    deadline=T0, detected_at=T0 + timedelta(seconds=i), state="running",
                )
            )  # fmt: skip
    with store.session() as session:
        assert [m.run_id for m in sla.list_misses(session)] == ["r2", "r1", "r0"]
        assert [m.run_id for m in sla.list_misses(session, dag_id="a", limit=1)] == ["r2"]


def test_the_verdicts():
    run = sla.RunRow(1, "d", "r", "manual", "running", T0, T0, T0, T0, None)
    at = T0 + timedelta(seconds=30)
    assert sla.run_verdict(run, at, at - timedelta(seconds=1)) is None
    assert sla.run_verdict(run, at, at) is True
    ended = dataclasses.replace(run, state="success", end_date=at - timedelta(seconds=1))
    assert sla.run_verdict(ended, at, T0 + timedelta(hours=1)) is False
    late = dataclasses.replace(ended, state="failed", end_date=at + timedelta(seconds=1))
    assert sla.run_verdict(late, at, T0 + timedelta(hours=1)) is True
    assert sla.task_verdict([("success", at - timedelta(seconds=1))], at) is None
    assert sla.task_verdict([("success", at + timedelta(seconds=1))], at) == "success"
    assert sla.task_verdict([("success", at), ("up_for_retry", None)], at) == "up_for_retry"
    assert sla.task_verdict([("skipped", None)], at) is None
    assert sla.task_verdict([], at) is None


def test_when_nothing_has_an_sla_a_pass_is_one_query(store, add_dag, sched_config):
    add_dag("plain", 'with DAG("plain", schedule=None):\n    EmptyOperator(task_id="t")\n')
    scheduler = Scheduler(store, sched_config, StubExecutor(), clock=FakeClock(T0))
    scheduler.start()
    trigger(store, "plain")
    scheduler.tick(T0)
    checker = SlaChecker({}, sched_config)
    seen: list[str] = []

    checking_thread = threading.get_ident()

    def record(conn, cursor, statement, *args):
        if threading.get_ident() == checking_thread:  # not the services' threads
            seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        checker.check(TickContext(T0 + timedelta(hours=1), store, sched_config, scheduler.plan_of))
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    assert len([s for s in seen if s.lstrip().upper().startswith("SELECT")]) == 1
    assert misses(store) == []


def test_a_pass_that_fails_to_commit_is_retried_and_counted_once(
    store, add_dag, start_scheduler, emitted, monkeypatch
):
    add_dag("flaky", FLAKY)
    clock = FakeClock(T0)
    scheduler, _ = start_scheduler(clock)
    trigger(store, "flaky")
    scheduler.tick(T0)
    real = sla.outbox.enqueue

    def broken(*args, **kwargs):
        raise RuntimeError("outbox unavailable")

    monkeypatch.setattr(sla.outbox, "enqueue", broken)
    clock.set(T0 + timedelta(minutes=2))
    scheduler.tick(clock.now())  # the hook fails: logged, and its transaction rolled back
    assert misses(store) == [] and emitted.values("deadline.missed") == []

    monkeypatch.setattr(sla.outbox, "enqueue", real)
    clock.advance(timedelta(seconds=1))
    scheduler.tick(clock.now())
    assert [(m[0], m[4]) for m in misses(store)] == [("dag_deadline", clock.now())]
    assert emitted.values("deadline.missed") == [({"dag_id": "flaky"}, 1.0)]
    assert [a.event for a in alerts(store)] == ["sla_missed"]


def seed_runs(store, dag_id: str, seconds: list[float]) -> None:
    """Past successful runs of `dag_id` that took these durations (newest first)."""
    from engine.store import dags as dag_store
    from engine.store import runs

    with store.session() as session:
        serialized = dag_store.get_dag(session, dag_id).serialized
        for i, duration in enumerate(seconds):
            when = T0 - timedelta(days=i + 1)
            run = runs.create_dag_run(
                session, serialized, run_id=f"old_{i}", run_type="manual", logical_date=when,
                data_interval=(when, when), conf=None, state=DagRunState.SUCCESS, now=when,
            )  # fmt: skip
            run.start_date, run.end_date = when, when + timedelta(seconds=duration)


LEARNED = """
with DAG("learned", schedule=None, deadline=Deadline(DeadlineReference.DAGRUN_QUEUED_AT,
                                                     Deadline.recent_runs(n=3, factor=2))):
    EmptyOperator(task_id="t")
"""


@pytest.mark.parametrize(("history", "deadline"), [([60, 90, 120, 5000], 180), ([60, 90], None)])
def test_a_deadline_learned_from_recent_runs(store, add_dag, start_scheduler, history, deadline):
    add_dag("learned", LEARNED)
    seed_runs(store, "learned", history)
    clock = FakeClock(T0)
    scheduler, _ = start_scheduler(clock)
    trigger(store, "learned")
    seen: list[tuple[str, object]] = []

    checking_thread = threading.get_ident()

    def record(conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() == checking_thread:  # not the services' threads
            seen.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        for seconds in (0, 179, 181, 10_000):
            clock.set(T0 + timedelta(seconds=seconds))
            scheduler.tick(clock.now())
            if seconds == 179:
                assert misses(store) == []
    finally:
        event.remove(store.engine, "before_cursor_execute", record)

    if deadline is None:  # fewer than min_runs (3) successful runs: no deadline yet
        assert misses(store) == []
        return
    # 2 x the mean of the newest three runs (60, 90, 120 s), from the queued time
    assert [(m[0], m[3], m[4]) for m in misses(store)] == [
        ("dag_deadline", T0 + timedelta(seconds=deadline), T0 + timedelta(seconds=181))
    ]
    learned = [s for s in seen if "row_number() OVER" in s[0] and "dag_run" in s[0]]
    assert len(learned) == 3  # at +0 s, +179 s (a minute old), cached at +181 s, +10000 s
    if store.url.get_backend_name() == "sqlite":
        with store.engine.connect() as connection:
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {learned[0][0]}", learned[0][1])
            assert not [row[-1] for row in plan if row[-1].startswith("SCAN dag_run")]
