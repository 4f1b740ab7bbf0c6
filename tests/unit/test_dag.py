"""DAG construction, graph queries and definition errors."""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

import pendulum
import pytest

from engine import DAG, EmptyOperator, Param, dag, task
from engine.exceptions import (
    CycleError,
    DagDefinitionError,
    DuplicateTaskIdError,
    ParamValidationError,
)
from engine.sdk.dag import current_dag, pop_autoregistered_dags
from engine.sdk.params import DagParam, ParamsDict
from engine.sdk.schedules import CronTimetable, NullTimetable

START = pendulum.datetime(2026, 1, 1)


def test_defaults_and_fileloc_point_at_the_constructing_file():
    d = DAG("plain")
    assert d.fileloc == __file__
    assert d.owner == "dagwatch"
    assert isinstance(d.timetable, NullTimetable)
    assert d.timezone.name == "UTC"
    assert d.start_date is None and d.tasks == [] and d.params == ParamsDict()
    assert isinstance(d.params, ParamsDict)


def test_owner_from_default_args_unless_given():
    assert DAG("a", default_args={"owner": "ops"}).owner == "ops"
    assert DAG("b", owner="me", default_args={"owner": "ops"}).owner == "me"


def test_start_date_from_default_args_and_timezone_from_start_date():
    amsterdam = pendulum.datetime(2026, 3, 1, tz="Europe/Amsterdam")
    d = DAG("tz", schedule="@daily", default_args={"start_date": amsterdam})
    assert d.timezone.name == "Europe/Amsterdam"
    assert d.start_date == amsterdam
    assert d.start_date.timezone_name == "UTC"
    assert d.timetable.serialize()["timezone"] == "Europe/Amsterdam"


def test_naive_start_date_is_utc():
    d = DAG("naive", schedule="@daily", start_date=dt.datetime(2026, 1, 1, 6))
    assert d.start_date == pendulum.datetime(2026, 1, 1, 6, tz="UTC")
    assert d.timezone.name == "UTC"


def test_callbacks_are_normalised_to_lists():
    def cb(context):
        return None

    d = DAG("cb", on_success_callback=cb, on_failure_callback=[cb, cb])
    assert d.on_success_callback == [cb]
    assert d.on_failure_callback == [cb, cb]
    assert d.sla_miss_callback == []
    with pytest.raises(DagDefinitionError, match="callable"):
        DAG("cb2", on_failure_callback="not callable")


def test_params_wrap_plain_values_and_merge_default_args_params():
    d = DAG(
        "p", params={"n": Param(1, type="integer"), "name": "x"}, default_args={"params": {"a": 1}}
    )
    assert set(d.params) == {"a", "n", "name"}
    assert d.params["name"].value == "x"
    assert "params" not in d.default_args
    assert d.params.resolve({"n": 5}) == {"a": 1, "n": 5, "name": "x"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": "@daily"}, "DAG 'bad' has schedule '@daily' but no start_date"),
        ({"schedule": "@once"}, "no start_date"),
        (
            {"schedule": "not a cron", "start_date": START},
            "DAG 'bad': invalid schedule 'not a cron'",
        ),
        ({"schedule": "61 * * * *", "start_date": START}, "invalid schedule '61 \\* \\* \\* \\*'"),
        ({"schedule": 5, "start_date": START}, "DAG 'bad': schedule must be"),
        (
            {"start_date": START, "end_date": START - timedelta(days=1)},
            "end_date .* is before start_date",
        ),
        ({"max_active_runs": 0}, "max_active_runs must be None or an integer >= 1"),
        ({"dagrun_timeout": 60}, "dagrun_timeout must be a timedelta"),
        ({"tags": ["ok", ""]}, "tag ''"),
        ({"start_date": "2026-01-01"}, "start_date must be a datetime"),
    ],
)
def test_construction_errors_name_the_dag(kwargs, message):
    with pytest.raises(DagDefinitionError, match=message):
        DAG("bad", **kwargs)


@pytest.mark.parametrize("dag_id", ["", "has space", "slash/id", "x" * 251])
def test_invalid_dag_ids(dag_id):
    with pytest.raises(DagDefinitionError, match="dag_id"):
        DAG(dag_id)


def test_context_manager_stack_nests_and_unwinds():
    with DAG("outer") as outer:
        assert current_dag() is outer
        with DAG("inner") as inner:
            assert current_dag() is inner
            t_inner = EmptyOperator(task_id="t")
        assert current_dag() is outer
        t_outer = EmptyOperator(task_id="t")
    assert current_dag() is None
    assert t_inner.dag is inner and t_outer.dag is outer


def test_stack_is_unwound_when_the_block_raises():
    with pytest.raises(RuntimeError), DAG("boom"):
        raise RuntimeError("x")
    assert current_dag() is None


def test_autoregistered_dags_are_collected_once():
    pop_autoregistered_dags()
    with DAG("reg1") as first:
        pass
    with DAG("reg2") as second:
        pass
    assert pop_autoregistered_dags() == [first, second]
    assert pop_autoregistered_dags() == []


def test_task_queries():
    with DAG("q") as d:
        a, b, c, e = (EmptyOperator(task_id=x) for x in "abce")
        a >> [b, c]
        [b, c] >> e
        lone = EmptyOperator(task_id="lone")
    assert d.task_ids == ["a", "b", "c", "e", "lone"]
    assert d.tasks == [a, b, c, e, lone]
    assert d.get_task("c") is c
    assert [t.task_id for t in d.roots] == ["a", "lone"]
    assert [t.task_id for t in d.leaves] == ["e", "lone"]
    assert d.has_task("a") and not d.has_task("zz")
    with pytest.raises(KeyError, match="task 'zz' not found in DAG 'q'"):
        d.get_task("zz")


def test_topological_sort_is_stable_by_insertion_order():
    with DAG("topo") as d:
        late = EmptyOperator(task_id="late")
        first = EmptyOperator(task_id="first")
        second = EmptyOperator(task_id="second")
        z = EmptyOperator(task_id="z")
        first >> late
        z >> second
    # late waits for first, second for z; among ready tasks insertion order wins
    assert [t.task_id for t in d.topological_sort()] == ["first", "late", "z", "second"]


def test_cycle_error_prints_the_cycle_path():
    with DAG("cyc") as d:
        start = EmptyOperator(task_id="start")
        a, b, c = (EmptyOperator(task_id=x) for x in "abc")
        start >> a >> b >> c >> a
    with pytest.raises(CycleError, match=r"^cycle in DAG 'cyc': a -> b -> c -> a$"):
        d.validate()
    with pytest.raises(CycleError):
        d.topological_sort()


def test_self_loop_is_a_cycle():
    with DAG("loop") as d:
        a = EmptyOperator(task_id="a")
        a >> a
    with pytest.raises(CycleError, match="a -> a"):
        d.validate()


def test_duplicate_task_id_raises_when_added():
    with DAG("dup"):
        EmptyOperator(task_id="x")
        with pytest.raises(
            DuplicateTaskIdError, match="task id 'x' has already been added to DAG 'dup'"
        ):
            EmptyOperator(task_id="x")


def test_validate_rejects_edges_to_tasks_outside_the_dag():
    with DAG("v") as d:
        a = EmptyOperator(task_id="a")
    a.downstream_task_ids.add("ghost")
    with pytest.raises(DagDefinitionError, match="'ghost', which is not in the DAG"):
        d.validate()


def test_validate_checks_param_defaults():
    d = DAG("pv", params={"n": Param("x", type="integer")})
    with pytest.raises(ParamValidationError, match="DAG 'pv': param 'n'"):
        d.validate()
    DAG("ok", params={"n": Param(type="integer")}).validate()  # required: no default yet


def test_edge_info_is_empty_without_label():
    with DAG("e") as d:
        a, b = EmptyOperator(task_id="a"), EmptyOperator(task_id="b")
        a >> b
    assert d.edge_info("a", "b") == {}
    d.set_edge_info("a", "b", {"label": "go"})
    assert d.edge_info("a", "b") == {"label": "go"}


def test_dag_decorator_builds_a_dag_with_params_from_the_signature():
    @dag(schedule="@daily", start_date=START, params={"limit": Param(5, type="integer")})
    def etl(limit=10, region="eu", *, when=None):
        """Extract, then load."""

        @task
        def extract(limit, region):
            return [region] * limit

        extract(limit, region)

    built = etl()
    assert isinstance(built, DAG)
    assert built.dag_id == "etl"
    assert built.doc_md == "Extract, then load."
    assert built.fileloc == __file__
    assert built.params["limit"].value == 10
    assert built.params["limit"].schema == {"type": "integer"}  # schema kept, default replaced
    assert built.params.resolve({}) == {"limit": 10, "region": "eu", "when": None}
    operator = built.get_task("extract")
    assert all(isinstance(arg, DagParam) for arg in operator.op_args)
    assert operator.execute({"params": {"limit": 2, "region": "us"}, "ti": None}) == ["us", "us"]
    assert current_dag() is None


def test_dag_decorator_call_arguments_override_defaults_and_dag_id():
    @dag(dag_id="custom")
    def pipeline(size: int, mode="fast"):
        pass

    built = pipeline(size=3)
    assert built.dag_id == "custom"
    assert built.params.resolve({}) == {"size": 3, "mode": "fast"}


def test_bare_dag_decorator_and_required_param():
    @dag
    def needs_input(value):
        pass

    built = needs_input()
    assert built.dag_id == "needs_input"
    with pytest.raises(ParamValidationError, match="param 'value' is required"):
        built.params.resolve({})


def test_dag_decorator_keeps_schedule_validation():
    @dag(schedule="@hourly")
    def unscheduled():
        pass

    with pytest.raises(DagDefinitionError, match="DAG 'unscheduled' has schedule '@hourly'"):
        unscheduled()


def test_dag_attributes_from_arguments():
    d = DAG(
        "full",
        schedule=timedelta(hours=6),
        start_date=START,
        end_date=START + timedelta(days=10),
        catchup=True,
        tags=["b", "a", "b"],
        description="desc",
        max_active_runs=2,
        max_active_tasks=4,
        dagrun_timeout=timedelta(hours=1),
        is_paused_upon_creation=False,
        doc_md="# Doc",
        render_template_as_native_obj=True,
        template_searchpath="/tmp/templates",
    )
    assert d.tags == ["b", "a"]
    assert d.timetable.summary == "6:00:00"
    assert d.catchup is True and d.max_active_runs == 2 and d.max_active_tasks == 4
    assert d.template_searchpath == ["/tmp/templates"]
    assert d.end_date == START + timedelta(days=10)


def test_cron_schedule_uses_dag_timezone():
    d = DAG(
        "cron", schedule="0 6 * * 1-5", start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Tokyo")
    )
    assert isinstance(d.timetable, CronTimetable)
    assert d.timetable.summary == "0 6 * * 1-5"
    assert d.timetable.timezone.name == "Asia/Tokyo"
