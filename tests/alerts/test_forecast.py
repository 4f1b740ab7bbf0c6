"""The deadline forecast: runs whose history predicts a miss are told before the miss."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from alerts import forecast
from engine import DAG, EmptyOperator, chain
from engine.clock import FakeClock
from engine.parsing.serialization import SerializedDAG, serialize_dag
from engine.states import DagRunState, TaskState
from engine.store import dags as dag_store
from engine.store import runs
from engine.store.models import SlaMiss, TaskInstance, TaskTry
from tests.alerts import test_sla
from tests.alerts.test_sla import alerts, start_attempt
from tests.integration import test_scheduler_tick as tick
from tests.integration.test_scheduler_tick import T0, complete, trigger

sched_config = tick.sched_config
add_dag = tick.add_dag
start_scheduler = test_sla.start_scheduler

NIGHTLY = """
with DAG("nightly", schedule=None,
         deadline=Deadline(DeadlineReference.DAGRUN_QUEUED_AT, timedelta(minutes=30))):
    chain(EmptyOperator(task_id="extract"), EmptyOperator(task_id="transform"),
          EmptyOperator(task_id="load", sla=timedelta(minutes=25)))
"""
NO_ZOMBIES = {"scheduler__heartbeat_timeout": 10**6}  # attempts here never heartbeat


def seed_history(store, dag_id: str, durations: dict[str, list[float]]) -> None:
    """Past successful runs of `dag_id`, one per sample, with task tries of these durations."""
    count = max(len(values) for values in durations.values())
    with store.session() as session:
        serialized = dag_store.get_dag(session, dag_id).serialized
        for i in range(count):
            when = T0 - timedelta(days=i + 1)
            run = runs.create_dag_run(
                session, serialized, run_id=f"old_{i}", run_type="manual", logical_date=when,
                data_interval=(when, when), conf=None, state=DagRunState.SUCCESS, now=when,
            )  # fmt: skip
            ids = dict(
                session.execute(
                    select(TaskInstance.task_id, TaskInstance.id).where(
                        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id
                    )
                ).all()
            )
            for task_id, values in durations.items():
                if i < len(values):
                    session.execute(
                        insert(TaskTry).values(
                            ti_id=ids[task_id], dag_id=dag_id, run_id=run.run_id,
                            task_id=task_id, try_number=1, state="success", start_date=when,
                            end_date=when + timedelta(seconds=values[i]), duration=values[i],
                        )
                    )  # fmt: skip


def gauge(emitted, name: str) -> list[float]:
    return [value for labels, value in emitted.values(name) if labels == {"dag_id": "nightly"}]


def test_a_run_whose_history_predicts_a_miss_is_warned_once_before_it(
    store, add_dag, start_scheduler, emitted
):
    add_dag("nightly", NIGHTLY)
    seed_history(
        store,
        "nightly",
        {
            "extract": [500, 550, 600, 600, 600],  # p90: 600
            "transform": [700, 800, 900, 900, 1000],  # p90: 960
            "load": [600, 600, 600, 600, 600],
        },
    )
    clock = FakeClock(T0)
    scheduler, stub = start_scheduler(clock, **NO_ZOMBIES)
    run_id = trigger(store, "nightly")

    scheduler.tick(T0)  # extract queued: 600 + 960 + 600 s left, the deadline is in 1800 s

    warned = alerts(store, "deadline_at_risk")
    assert [(a.task_id, a.status, a.severity) for a in warned] == [
        (None, "pending", "warning"),
        ("load", "pending", "warning"),
    ]
    run_warning, load_warning = (a.payload for a in warned)
    assert run_warning["deadline"] == (T0 + timedelta(minutes=30)).isoformat()
    assert run_warning["predicted_finish"] == (T0 + timedelta(seconds=2160)).isoformat()
    assert run_warning["slack"] == -360.0 and run_warning["kind"] == "dag_deadline"
    assert load_warning["deadline"] == (T0 + timedelta(minutes=25)).isoformat()
    assert load_warning["kind"] == "task_sla" and load_warning["slack"] == -660.0
    assert warned[0].fingerprint == f"deadline_at_risk|oncall|nightly|{run_id}|||dag_deadline"

    (ti_id,) = list(stub.held)
    start_attempt(store, ti_id, T0 + timedelta(seconds=1))
    clock.set(T0 + timedelta(seconds=10))
    scheduler.tick(clock.now())  # extract has run 9 s of its 600
    scheduler, _ = start_scheduler(clock, **NO_ZOMBIES)  # a restart forgets what it warned
    clock.set(T0 + timedelta(seconds=20))
    scheduler.tick(clock.now())

    assert len(alerts(store, "deadline_at_risk")) == 2
    assert gauge(emitted, "deadline.at_risk") == [1.0, 1.0, 1.0]
    assert gauge(emitted, "deadline.slack_seconds") == [-360.0, -361.0, -361.0]

    clock.set(T0 + timedelta(seconds=1801))
    scheduler.tick(clock.now())  # the miss itself, after the warning

    with store.session() as session:
        kinds = session.execute(select(SlaMiss.kind, SlaMiss.detected_at)).all()
    assert sorted(kinds) == [("dag_deadline", clock.now()), ("task_sla", clock.now())]
    assert [a.event for a in alerts(store)] == ["deadline_at_risk"] * 2 + ["sla_missed"] * 2
    assert all(a.created_at == T0 for a in alerts(store, "deadline_at_risk"))
    # Missed, no longer at risk; extract has run 1800 s, past all its recorded runs
    # (overrunning): it is expected to run as long again, then transform and load: 960 + 600.
    assert gauge(emitted, "deadline.at_risk")[-1] == 0.0
    assert gauge(emitted, "deadline.slack_seconds")[-1] == 1800.0 - 1801 - 1800 - 1560


def test_no_warning_when_history_says_the_run_ends_in_time(
    store, add_dag, start_scheduler, emitted
):
    add_dag("nightly", NIGHTLY)
    seed_history(store, "nightly", {"extract": [60] * 3, "transform": [60] * 3, "load": [60] * 3})
    clock = FakeClock(T0)
    scheduler, stub = start_scheduler(clock, **NO_ZOMBIES)
    trigger(store, "nightly")
    scheduler.tick(T0)
    for step in range(1, 4):  # each task ends 10 s after it is queued
        (ti_id,) = list(stub.held)
        clock.set(T0 + timedelta(seconds=10 * step))
        complete(store, stub, ti_id, TaskState.SUCCESS, clock.now())
        scheduler.tick(clock.now())

    assert alerts(store) == []
    assert gauge(emitted, "deadline.at_risk") == [0.0, 0.0, 0.0, 0.0]
    # 180 s predicted at T0, then 120, 60 and the run is over: only its ended gauge follows
    assert gauge(emitted, "deadline.slack_seconds") == [1620.0, 1670.0, 1720.0]


def test_the_remaining_critical_path():
    with DAG("diamond") as d:
        a, b, c, e = (EmptyOperator(task_id=t) for t in "abce")
        chain(a, [b, c], EmptyOperator(task_id="d"), e)
    plan = SerializedDAG.from_dict(serialize_dag(d))
    started = T0 - timedelta(seconds=100)
    states = {"a": ("success", None), "b": ("running", started), "c": ("scheduled", None)}
    expected = {"a": 999.0, "b": 300.0, "c": 50.0, "d": 10.0}  # e: no history
    finish = forecast.remaining_path(plan.topological_sort(), states, expected, T0)
    assert finish == {"b": 200.0, "c": 50.0, "d": 210.0, "e": 210.0}
    overran = {**states, "b": ("running", T0 - timedelta(seconds=400))}
    assert forecast.remaining_path(plan.topological_sort(), overran, expected, T0)["d"] == 60.0
    # a sensor between pokes (reschedule mode) has waited since its try's first poke
    waiting = {**states, "b": ("up_for_reschedule", started)}
    assert forecast.remaining_path(plan.topological_sort(), waiting, expected, T0)["b"] == 200.0


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([5.0], 0.9, 5.0), ([1, 2, 3, 4, 5], 0.5, 3.0), ([700, 800, 900, 900, 1000], 0.9, 960.0)],
)
def test_quantile(values, q, expected):
    assert forecast.quantile(values, q) == pytest.approx(expected)


def test_durations_come_from_the_last_successful_tries_only(store, add_dag):
    add_dag("nightly", NIGHTLY)
    seed_history(store, "nightly", {"extract": [100, 200, 300, 400]})
    with store.session() as session:
        session.execute(insert(TaskTry).values(
            ti_id=session.scalars(select(TaskInstance.id)).first(), dag_id="nightly",
            run_id="old_0", task_id="extract", try_number=2, state="failed", duration=9999.0,
            start_date=T0, end_date=T0,
        ))  # fmt: skip
        durations = forecast.TaskDurations(history=2, q=1.0)
        durations.expected(session, ["nightly"], T0)
    # the two newest successes (100 s one day ago, 200 s two days ago); failures never count
    assert durations.of("nightly") == {"extract": 200.0}
    assert durations.of("other") == {}
