"""Airflow 2 idioms (engine.sdk.compat): each works as in Airflow 2.x, warns once per DAG file
naming its Airflow 3 spelling, and DAGs that do not use them see no difference."""

from __future__ import annotations

import logging
import warnings
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pendulum
import pytest

from engine import (
    DAG,
    BaseHook,
    BaseOperator,
    BaseSensorOperator,
    DummyOperator,
    EmptyOperator,
    PythonOperator,
)
from engine.exceptions import DagDefinitionError
from engine.parsing.serialization import serialize_dag
from engine.sdk.compat import (
    DagwatchDeprecationWarning,
    _warned,
    airflow2_dates,
    check_source,
)
from engine.utils.dates import days_ago
from engine.utils.decorators import apply_defaults

START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_warnings():
    """Each test sees its idioms' first warning (they are once per file and process)."""
    _warned.clear()
    yield
    _warned.clear()


def _messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, DagwatchDeprecationWarning)]


def test_schedule_interval_is_the_schedule_and_warns_once_per_file():
    with pytest.warns(DagwatchDeprecationWarning, match=r"DAG\(schedule=\.\.\.\)") as record:
        first = DAG("a", schedule_interval="@daily", start_date=START)
        second = DAG("b", schedule_interval=timedelta(hours=6), start_date=START)
    assert first.timetable.summary == "@daily" and first.schedule == "@daily"
    assert second.timetable.serialize() == {"type": "delta", "seconds": 21600.0}
    assert len([m for m in _messages(record) if "schedule_interval" in m]) == 1
    assert record[0].filename == __file__  # the warning points at the DAG file


def test_schedule_and_schedule_interval_together_are_an_error():
    with pytest.raises(DagDefinitionError, match="not both"):
        DAG("a", schedule="@daily", schedule_interval="@hourly", start_date=START)


def test_concurrency_is_max_active_tasks():
    with pytest.warns(DagwatchDeprecationWarning, match="max_active_tasks"):
        dag = DAG("a", concurrency=3)
    assert dag.max_active_tasks == 3
    with pytest.raises(DagDefinitionError, match="not both"):
        DAG("b", concurrency=3, max_active_tasks=2)


def test_days_ago_is_midnight_utc_n_days_back():
    with pytest.warns(DagwatchDeprecationWarning, match="days_ago"):
        value = days_ago(2)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert value == today - timedelta(days=2) and value.tzinfo is not None
    assert days_ago(0, hour=6) == today.replace(hour=6)


def test_dummy_operator_is_an_empty_operator():
    with DAG("a") as dag, pytest.warns(DagwatchDeprecationWarning, match="EmptyOperator"):
        join = DummyOperator(task_id="join")
    assert isinstance(join, EmptyOperator) and join.execute({}) is None
    assert serialize_dag(dag)["tasks"][0]["operator"] == "DummyOperator"


def test_apply_defaults_is_a_no_op_decorator_and_defaults_still_apply():
    with pytest.warns(DagwatchDeprecationWarning, match="apply_defaults"):

        class Custom(BaseOperator):
            @apply_defaults
            def __init__(self, name: str = "x", **kwargs):
                super().__init__(**kwargs)
                self.name = name

    with DAG("a", default_args={"name": "from-defaults", "retries": 2}):
        task = Custom(task_id="t")
    assert task.name == "from-defaults" and task.retries == 2


def test_provide_context_is_accepted_and_ignored():
    with DAG("a"), pytest.warns(DagwatchDeprecationWarning, match="provide_context"):
        task = PythonOperator(task_id="t", python_callable=lambda: 1, provide_context=True)
    assert not hasattr(task, "provide_context")


def test_self_log_on_operators_hooks_and_sensors_writes_to_a_task_logger(caplog):
    class Hook(BaseHook):
        def __init__(self):  # an Airflow 2 hook that does not call super().__init__()
            pass

    class Sensor(BaseSensorOperator):
        def poke(self, context):
            return True

    with DAG("a"):
        operator = EmptyOperator(task_id="op")
        sensor = Sensor(task_id="sensor")
    caplog.set_level(logging.INFO)
    for item in (operator, sensor, Hook()):
        item.log.info("hello from %s", type(item).__name__)
    assert [r.getMessage() for r in caplog.records] == [
        "hello from EmptyOperator",
        "hello from Sensor",
        "hello from Hook",
    ]
    assert operator.log.name.startswith("engine.task.")
    operator.log = logging.getLogger("mine")  # Airflow 2 code may assign its own
    assert operator.log.name == "mine"


# -- DAG.following_schedule / previous_schedule: Airflow 2's own DST test cases ----------

ZURICH = pendulum.timezone("Europe/Zurich")


def _dag(schedule, start) -> DAG:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DagwatchDeprecationWarning)
        return DAG("tz_dag", start_date=start, schedule_interval=schedule)


def _schedules(dag: DAG, when: datetime) -> tuple[datetime | None, datetime | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DagwatchDeprecationWarning)
        return dag.previous_schedule(when), dag.following_schedule(when)


def test_every_five_minutes_across_the_autumn_fold():
    start = pendulum.datetime(2018, 10, 28, 2, 55, tz=ZURICH).replace(fold=0)  # still CEST
    utc = start.in_timezone("UTC")
    assert utc.isoformat() == "2018-10-28T00:55:00+00:00"
    dag = _dag("*/5 * * * *", start)
    prev, following = _schedules(dag, utc)
    assert following.isoformat() == "2018-10-28T01:00:00+00:00"
    assert following.in_timezone(ZURICH).isoformat() == "2018-10-28T02:00:00+01:00"
    assert prev.in_timezone(ZURICH).isoformat() == "2018-10-28T02:50:00+02:00"
    assert _schedules(dag, following)[0] == utc


@pytest.mark.parametrize(
    ("start", "prev", "following", "prev_of_following"),
    [
        # CEST -> CET (Airflow 2's test_following_previous_schedule_daily_dag_cest_to_cet):
        # start 2018-10-27 03:00 Zurich
        (
            "2018-10-27T01:00:00+00:00",
            "2018-10-26T01:00:00+00:00",
            "2018-10-28T02:00:00+00:00",
            "2018-10-27T01:00:00+00:00",
        ),
        # CET -> CEST (test_following_previous_schedule_daily_dag_cet_to_cest): start
        # 2018-03-25 02:00 Zurich, a time the change skips, which pendulum's PRE_TRANSITION
        # rule made 01:00+01:00
        (
            "2018-03-25T00:00:00+00:00",
            "2018-03-24T02:00:00+00:00",
            "2018-03-25T01:00:00+00:00",
            "2018-03-24T02:00:00+00:00",
        ),
    ],
)
def test_daily_schedule_keeps_its_wall_clock_time_across_dst(
    start, prev, following, prev_of_following
):
    utc = pendulum.parse(start)
    dag = _dag("0 3 * * *", utc.in_timezone(ZURICH))
    got_prev, got_following = _schedules(dag, utc)
    assert got_prev.isoformat() == prev and got_following.isoformat() == following
    assert _schedules(dag, got_following)[0].isoformat() == prev_of_following


def test_timedelta_once_and_none_schedules():
    when = datetime(2024, 3, 5, 12, tzinfo=UTC)
    delta = _dag(timedelta(hours=6), START)
    assert _schedules(delta, when) == (when - timedelta(hours=6), when + timedelta(hours=6))
    assert _schedules(_dag("@once", START), when) == (None, None)
    assert _schedules(_dag(None, START), when) == (None, None)


def test_following_schedule_warns_with_the_airflow_3_spelling():
    dag = _dag("@daily", START)
    with pytest.warns(DagwatchDeprecationWarning, match="timetable"):
        dag.following_schedule(START)


# -- the Airflow 2 date variables --------------------------------------------------------


def _run(logical, start=None, end=None, run_type="scheduled"):
    return SimpleNamespace(
        logical_date=logical,
        data_interval_start=start or logical,
        data_interval_end=end or logical,
        run_type=run_type,
    )


def test_dates_of_a_scheduled_daily_run():
    timetable = _dag("@daily", START).timetable
    logical = datetime(2024, 3, 5, tzinfo=UTC)
    run = _run(logical, logical, logical + timedelta(days=1))
    values = airflow2_dates(timetable, run, lambda: datetime(2024, 3, 3, tzinfo=UTC))
    assert values == {
        "execution_date": logical,
        "next_execution_date": datetime(2024, 3, 6, tzinfo=UTC),
        "next_ds": "2024-03-06",
        "next_ds_nodash": "20240306",
        "prev_execution_date": datetime(2024, 3, 4, tzinfo=UTC),
        "prev_ds": "2024-03-04",
        "prev_ds_nodash": "20240304",
        "tomorrow_ds": "2024-03-06",
        "tomorrow_ds_nodash": "20240306",
        "yesterday_ds": "2024-03-04",
        "yesterday_ds_nodash": "20240304",
        "prev_execution_date_success": datetime(2024, 3, 3, tzinfo=UTC),
    }


def test_dates_across_the_spring_dst_change_in_amsterdam():
    amsterdam = pendulum.timezone("Europe/Amsterdam")
    timetable = _dag("0 0 * * *", pendulum.datetime(2024, 3, 1, tz=amsterdam)).timetable
    # the run for local midnight of March 31 (CET) covers a 23-hour day
    logical = pendulum.datetime(2024, 3, 31, tz=amsterdam).in_timezone("UTC")
    end = pendulum.datetime(2024, 4, 1, tz=amsterdam).in_timezone("UTC")
    values = airflow2_dates(timetable, _run(logical, logical, end))
    assert logical.isoformat() == "2024-03-30T23:00:00+00:00"
    assert values["next_execution_date"].isoformat() == "2024-03-31T22:00:00+00:00"
    assert values["prev_execution_date"].isoformat() == "2024-03-29T23:00:00+00:00"
    # ds-style values are UTC dates, as in Airflow 2
    assert (values["next_ds"], values["prev_ds"]) == ("2024-03-31", "2024-03-29")
    assert (values["tomorrow_ds"], values["yesterday_ds"]) == ("2024-03-31", "2024-03-29")


def test_dates_of_an_hourly_cron_across_the_autumn_fold():
    timetable = _dag("0 * * * *", pendulum.datetime(2024, 10, 1, tz=ZURICH)).timetable
    logical = datetime(2024, 10, 27, 0, tzinfo=UTC)  # 02:00 CEST, the hour before the fold
    values = airflow2_dates(timetable, _run(logical, logical, logical + timedelta(hours=1)))
    assert values["next_execution_date"] == datetime(2024, 10, 27, 1, tzinfo=UTC)
    assert values["prev_execution_date"] == datetime(2024, 10, 26, 23, tzinfo=UTC)


def test_dates_of_timedelta_and_once_schedules_and_of_manual_runs():
    logical = datetime(2024, 3, 5, 6, tzinfo=UTC)
    delta = _dag(timedelta(hours=6), START).timetable
    values = airflow2_dates(delta, _run(logical, logical, logical + timedelta(hours=6)))
    assert values["next_execution_date"] == logical + timedelta(hours=6)
    assert values["prev_execution_date"] == logical - timedelta(hours=6)
    once = _dag("@once", START).timetable
    values = airflow2_dates(once, _run(logical))
    assert values["next_ds"] is None and values["prev_ds"] is None
    assert values["next_execution_date"] is None and values["tomorrow_ds"] == "2024-03-06"
    daily = _dag("@daily", START).timetable
    manual = airflow2_dates(daily, _run(logical, run_type="manual"))
    assert manual["next_execution_date"] == logical == manual["prev_execution_date"]
    assert manual["next_ds"] == manual["prev_ds"] == "2024-03-05"


def test_a_test_run_gets_the_dates_of_the_scheduled_run_at_its_logical_date():
    daily = _dag("@daily", START).timetable
    logical = datetime(2024, 3, 5, tzinfo=UTC)
    values = airflow2_dates(daily, _run(logical, run_type="test"))
    assert (values["prev_ds"], values["next_ds"]) == ("2024-03-04", "2024-03-06")


def test_check_source_finds_the_airflow_2_variables_a_file_names(tmp_path):
    path = tmp_path / "dag.py"
    path.write_text(
        "def f(execution_date, **context):\n"
        "    return context['next_ds'], '{{ prev_ds_nodash }}'\n"
        "# tomorrow_ds in a comment does not count\n"
    )
    with pytest.warns(DagwatchDeprecationWarning) as record:
        found = check_source(path)
    assert sorted(found) == ["execution_date", "next_ds", "prev_ds_nodash"]
    assert any("data_interval_end" in m for m in _messages(record))
    clean = tmp_path / "clean.py"
    clean.write_text("x = '{{ ds }} {{ data_interval_end }}'\n")
    assert check_source(clean) == []


def test_a_dag_without_idioms_warns_nothing_and_serializes_as_before():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with DAG("plain", schedule="@daily", start_date=START, max_active_tasks=2) as dag:
            EmptyOperator(task_id="a") >> PythonOperator(task_id="b", python_callable=print)
        data = serialize_dag(dag)
    assert _messages(record) == []
    assert "dag_display_name" not in data
    assert all("task_display_name" not in task for task in data["tasks"])
    assert all(task["weight_rule"] == "downstream" for task in data["tasks"])


def test_the_variables_are_computed_only_when_read():
    from engine.sdk.compat import TaskContext
    from engine.sdk.templating import make_jinja_env

    dag = _dag("@daily", START)
    logical = datetime(2024, 3, 5, tzinfo=UTC)
    run = _run(logical, logical, logical + timedelta(days=1))
    context = TaskContext(ds="2024-03-05", dag=dag, dag_run=run)
    assert "next_ds" not in context  # nothing computed up front
    with pytest.warns(DagwatchDeprecationWarning, match="next_ds"):
        assert context["next_ds"] == "2024-03-06"
    with pytest.warns(DagwatchDeprecationWarning, match="prev_ds"):
        assert context.get("prev_ds") == "2024-03-04"
    assert context.get("nope", 1) == 1
    with pytest.raises(KeyError):
        context["nope"]
    template = make_jinja_env(dag).from_string("{{ ds }} {{ tomorrow_ds }} {{ execution_date }}")
    with pytest.warns(DagwatchDeprecationWarning) as record:
        text = template.render(dict(TaskContext(ds="2024-03-05", dag=dag, dag_run=run)))
    assert text == "2024-03-05 2024-03-06 2024-03-05T00:00:00+00:00"
    assert [m.split()[0] for m in _messages(record)] == ["tomorrow_ds", "execution_date"]
