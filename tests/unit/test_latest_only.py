"""LatestOnlyOperator: which runs count as the latest interval, and what it asks to skip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pendulum
import pytest

from engine import DAG, EmptyOperator, LatestOnlyOperator, TriggerRule
from engine.parsing.serialization import SerializedDAG, serialize_dag
from engine.sdk.operators import is_latest_interval
from engine.sdk.schedules import timetable_from_schedule
from engine.sdk.task_instance import RuntimeTaskInstance

DAY = timedelta(days=1)
D2 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "latest"),
    [
        (D2 - timedelta(hours=1), False),  # the interval has not even ended
        (D2, False),  # the next interval starts strictly after its end
        (D2 + timedelta(seconds=1), True),
        (D2 + DAY, True),  # the end of the next interval is included
        (D2 + DAY + timedelta(seconds=1), False),  # a newer interval has ended since
    ],
)
def test_daily_window(now, latest):
    assert is_latest_interval(timetable_from_schedule("@daily"), D2, now) is latest


def test_timedelta_and_cron_schedules_in_a_timezone():
    every_6h = timetable_from_schedule(timedelta(hours=6))
    assert is_latest_interval(every_6h, D2, D2 + timedelta(hours=6))
    assert not is_latest_interval(every_6h, D2, D2 + timedelta(hours=7))
    # 09:00 in Amsterdam: the run ending 2026-03-02 09:00 CET (08:00 UTC)
    amsterdam = pendulum.timezone("Europe/Amsterdam")
    nine = timetable_from_schedule("0 9 * * *", amsterdam)
    end = pendulum.datetime(2026, 3, 2, 9, tz=amsterdam)
    assert is_latest_interval(nine, end, pendulum.datetime(2026, 3, 3, 7, 59, tz="UTC"))
    # 08:30 UTC would still be within a 09:00 UTC schedule, not within 09:00 Amsterdam
    assert not is_latest_interval(nine, end, pendulum.datetime(2026, 3, 3, 8, 30, tz="UTC"))


@pytest.mark.parametrize("schedule", [None, "@once"])
def test_schedules_without_a_next_interval_are_always_latest(schedule):
    timetable = timetable_from_schedule(schedule)
    assert is_latest_interval(timetable, D2, D2 + 100 * DAY)


def build(schedule="@daily"):
    """Airflow's example: latest_only >> task1 >> [task3, task4]; task2 >> [task3, task4]."""
    with DAG("latest", schedule=schedule, start_date=datetime(2026, 1, 1)) as dag:
        latest_only = LatestOnlyOperator(task_id="latest_only")
        task1 = EmptyOperator(task_id="task1")
        task2 = EmptyOperator(task_id="task2")
        task3 = EmptyOperator(task_id="task3")
        task4 = EmptyOperator(task_id="task4", trigger_rule=TriggerRule.ALL_DONE)
        latest_only >> task1 >> [task3, task4]
        task2 >> [task3, task4]
    return dag, latest_only


def execute(dag, task, run_type, interval_end, now, *, with_dag=None):
    ti = RuntimeTaskInstance(None, dag.dag_id, "r", task.task_id, 1, 0, "h", Path("x"))
    run = SimpleNamespace(run_type=run_type, data_interval_end=interval_end)
    task._now = lambda: now
    context = {
        "dag": with_dag or dag,
        "dag_run": run,
        "ti": ti,
        "logical_date": interval_end - DAY,
    }
    return task.execute(context), ti.skipped_task_ids


@pytest.mark.parametrize("run_type", ["scheduled", "backfill"])
def test_an_older_interval_skips_the_direct_downstream_tasks(run_type):
    dag, latest_only = build()
    result, skipped = execute(dag, latest_only, run_type, D2, D2 + 3 * DAY)
    assert skipped == {"task1"}  # task3 follows by trigger rule; task4 (all_done) runs
    assert result == []


def test_the_latest_interval_skips_nothing():
    dag, latest_only = build()
    result, skipped = execute(dag, latest_only, "scheduled", D2, D2 + timedelta(hours=3))
    assert skipped == set()
    assert result == ["task1"]


@pytest.mark.parametrize("run_type", ["manual", "test"])
def test_runs_started_by_hand_are_never_skipped(run_type):
    dag, latest_only = build()
    result, skipped = execute(dag, latest_only, run_type, D2, D2 + 30 * DAY)
    assert skipped == set()
    assert result == ["task1"]


def test_works_from_the_serialized_timetable_too():
    dag, latest_only = build()
    serialized = SerializedDAG(serialize_dag(dag))
    _, skipped = execute(dag, latest_only, "scheduled", D2, D2 + 3 * DAY, with_dag=serialized)
    assert skipped == {"task1"}


def test_the_clock_defaults_to_now():
    dag, latest_only = build()
    before = datetime.now(UTC)
    assert before <= latest_only._now() <= datetime.now(UTC)
    # a run whose interval ended at the last midnight is the latest one
    ti = RuntimeTaskInstance(None, "latest", "r", "latest_only", 1, 0, "h", Path("x"))
    end = pendulum.now("UTC").start_of("day")
    run = SimpleNamespace(run_type="scheduled", data_interval_end=end)
    latest_only.execute({"dag": dag, "dag_run": run, "ti": ti, "logical_date": end - DAY})
    assert ti.skipped_task_ids == set()
