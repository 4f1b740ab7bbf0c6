"""Serialized DAGs: JSON-compatible, complete, deterministic, and readable without user code."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from datetime import timedelta

import pendulum
import pytest

from engine import (
    DAG,
    BashOperator,
    Deadline,
    DeadlineReference,
    EmptyOperator,
    Label,
    Param,
    PythonSensor,
    TaskGroup,
    TriggerRule,
    task,
)
from engine.exceptions import CycleError, ParamValidationError
from engine.parsing.serialization import SerializedDAG, serialize_dag
from engine.sdk.schedules import CronTimetable
from engine.store.dags import dag_hash


def _noop(context):
    return None


def build(retries: int = 1) -> DAG:
    with DAG(
        "shop",
        schedule="0 3 * * *",
        start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Amsterdam"),
        end_date=pendulum.datetime(2027, 1, 1),
        catchup=True,
        tags=["sales", "etl"],
        owner="ops",
        description="Nightly",
        doc_md="# Shop",
        max_active_runs=2,
        max_active_tasks=8,
        dagrun_timeout=timedelta(hours=2),
        is_paused_upon_creation=False,
        on_failure_callback=_noop,
        params={"limit": Param(10, type="integer", minimum=1, description="rows"), "mode": "x"},
        default_args={"retries": retries},
    ) as d:
        start = EmptyOperator(task_id="start")
        wait = PythonSensor(
            task_id="wait", python_callable=lambda: True, poke_interval=30, timeout=600
        )
        with TaskGroup("load", tooltip="Loading"):
            bash = BashOperator(
                task_id="bash",
                bash_command="echo hi",
                retry_delay=timedelta(minutes=1),
                retry_exponential_backoff=True,
                max_retry_delay=timedelta(minutes=10),
                execution_timeout=timedelta(minutes=5),
                sla=timedelta(hours=1),
                pool="db",
                pool_slots=2,
                priority_weight=3,
                queue="heavy",
                trigger_rule=TriggerRule.NONE_FAILED,
                depends_on_past=True,
                max_active_tis_per_dag=1,
                on_retry_callback=[_noop],
                doc="does bash",
            )

        @task(multiple_outputs=True)
        def report():
            return {}

        start >> Label("first wait") >> wait >> bash >> report()
    return d


def test_serialized_form_is_json_compatible_and_complete():
    data = serialize_dag(build())
    assert json.loads(json.dumps(data, sort_keys=True)) == data
    assert data["dag_id"] == "shop"
    assert data["timezone"] == "Europe/Amsterdam"
    assert data["schedule"] == {
        "type": "cron",
        "expression": "0 3 * * *",
        "timezone": "Europe/Amsterdam",
        "summary": "0 3 * * *",
    }
    assert data["timetable_summary"] == "0 3 * * *"
    assert data["start_date"] == "2025-12-31T23:00:00+00:00"
    assert data["end_date"] == "2027-01-01T00:00:00+00:00"
    assert data["tags"] == ["etl", "sales"]
    assert (data["owner"], data["description"], data["doc_md"]) == ("ops", "Nightly", "# Shop")
    assert (data["max_active_runs"], data["max_active_tasks"]) == (2, 8)
    assert data["dagrun_timeout"] == 7200.0
    assert data["is_paused_upon_creation"] is False
    assert data["has_on_failure_callback"] is True and data["has_on_success_callback"] is False
    assert data["params"]["limit"] == {
        "default": 10,
        "has_default": True,
        "description": "rows",
        "schema": {"type": "integer", "minimum": 1},
    }
    assert data["fileloc"] == __file__


def test_serialized_task_fields():
    data = serialize_dag(build())
    tasks = {t["task_id"]: t for t in data["tasks"]}
    assert list(tasks) == ["start", "wait", "load.bash", "report"]
    bash = tasks["load.bash"]
    assert bash["operator"] == "BashOperator" and bash["module"] == "engine.sdk.operators"
    assert bash["trigger_rule"] == "none_failed"
    assert (bash["retries"], bash["retry_delay"], bash["max_retry_delay"]) == (1, 60.0, 600.0)
    assert bash["retry_exponential_backoff"] is True
    assert (bash["execution_timeout"], bash["sla"]) == (300.0, 3600.0)
    assert (bash["pool"], bash["pool_slots"], bash["queue"]) == ("db", 2, "heavy")
    assert bash["priority_weight"] == 3 and bash["priority_weight_total"] == 4
    assert bash["depends_on_past"] is True and bash["max_active_tis_per_dag"] == 1
    assert bash["upstream_task_ids"] == ["wait"] and bash["downstream_task_ids"] == ["report"]
    assert bash["task_group"] == "load" and bash["doc"] == "does bash"
    assert bash["template_fields"] == ["bash_command", "env", "cwd"]
    assert bash["has_on_retry_callback"] is True and bash["has_on_failure_callback"] is False
    assert bash["is_sensor"] is False and bash["sensor"] is None
    wait = tasks["wait"]
    assert wait["is_sensor"] is True
    assert wait["sensor"] == {
        "mode": "poke",
        "poke_interval": 30.0,
        "timeout": 600.0,
        "soft_fail": False,
        "exponential_backoff": False,
    }
    report = tasks["report"]
    assert report["operator"] == "_PythonDecoratedOperator" and report["operator_name"] == "@task"
    assert report["multiple_outputs"] is True
    assert data["edges"][0] == {"upstream": "load.bash", "downstream": "report", "label": None}
    assert {"upstream": "start", "downstream": "wait", "label": "first wait"} in data["edges"]
    assert data["task_groups"] == {
        "load": {
            "tooltip": "Loading",
            "parent": None,
            "prefix_group_id": True,
            "task_ids": ["load.bash"],
        }
    }


def test_round_trip_to_a_read_only_dag():
    original = build()
    plan = SerializedDAG.from_dict(json.loads(json.dumps(serialize_dag(original))))
    assert plan.dag_id == "shop"
    assert isinstance(plan.timetable, CronTimetable) and plan.timetable == original.timetable
    assert plan.timezone.name == "Europe/Amsterdam"
    assert plan.start_date == original.start_date and plan.end_date == original.end_date
    assert plan.dagrun_timeout == timedelta(hours=2)
    assert plan.has_on_failure_callback and not plan.has_on_success_callback
    assert plan.params.resolve({"limit": 3}) == {"limit": 3, "mode": "x"}
    with pytest.raises(ParamValidationError, match="param 'limit'"):
        plan.params.resolve({"limit": 0})
    assert [t.task_id for t in plan.topological_sort()] == [
        t.task_id for t in original.topological_sort()
    ]
    assert [t.task_id for t in plan.roots] == ["start"]
    assert [t.task_id for t in plan.leaves] == ["report"]
    bash = plan.get_task("load.bash")
    assert bash.trigger_rule is TriggerRule.NONE_FAILED
    assert bash.retry_delay == timedelta(minutes=1)
    assert bash.execution_timeout == timedelta(minutes=5)
    assert bash.upstream_task_ids == frozenset({"wait"})
    assert bash.operator == "BashOperator" and bash.dag_id == "shop"
    assert plan.get_task("start").get_flat_relative_ids() == {"wait", "load.bash", "report"}
    assert plan.edge_info("start", "wait") == {"label": "first wait"}
    assert plan.edge_info("wait", "load.bash") == {}
    with pytest.raises(KeyError, match="task 'nope' not found in DAG 'shop'"):
        plan.get_task("nope")
    next_info = plan.timetable.next_dagrun_info(
        None, plan.start_date, plan.end_date, plan.catchup, pendulum.datetime(2026, 6, 1)
    )
    assert next_info.start == pendulum.datetime(2026, 1, 1, 3, tz="Europe/Amsterdam")


def test_hash_is_stable_and_changes_with_the_definition():
    first, second = serialize_dag(build()), serialize_dag(build())
    assert dag_hash(first) == dag_hash(second)
    assert len(dag_hash(first)) == 64
    assert dag_hash(serialize_dag(build(retries=2))) != dag_hash(first)


DAG_FILE = """
import pendulum
from engine import DAG, BashOperator, EmptyOperator, task

with DAG("from_file", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1),
         tags={"b", "a", "c"}, params={"x": 1}) as dag:
    @task
    def compute(n):
        return n

    start = EmptyOperator(task_id="start")
    start >> [compute(1), compute(2), BashOperator(task_id="b", bash_command="echo")]
"""


def _import(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module.dag


def test_hash_is_stable_across_imports_of_the_same_file(tmp_path):
    path = tmp_path / "my_dag.py"
    path.write_text(textwrap.dedent(DAG_FILE))
    first = serialize_dag(_import(path, "dagfile_x"))
    second = serialize_dag(_import(path, "dagfile_x"))
    assert first["fileloc"] == str(path)
    assert first["tags"] == ["a", "b", "c"]
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert dag_hash(first) == dag_hash(second)


def test_serializing_a_cyclic_dag_still_works_but_sorting_fails():
    with DAG("cyc") as d:
        a, b = EmptyOperator(task_id="a"), EmptyOperator(task_id="b")
        a >> b >> a
    plan = SerializedDAG.from_dict(serialize_dag(d))
    with pytest.raises(CycleError, match="cycle in DAG 'cyc': a -> b -> a"):
        plan.topological_sort()


def test_non_json_param_default_is_an_error_naming_the_param():
    d = DAG("bad_params", params={"when": pendulum.datetime(2026, 1, 1)})
    with pytest.raises(ParamValidationError, match="param 'when' of DAG 'bad_params'"):
        serialize_dag(d)


def test_unscheduled_and_delta_schedules():
    plain = serialize_dag(DAG("plain"))
    assert plain["schedule"] == {"type": "null"} and plain["timetable_summary"] == "None"
    assert plain["start_date"] is None and plain["timezone"] == "UTC"
    delta = serialize_dag(
        DAG("delta", schedule=timedelta(minutes=30), start_date=pendulum.datetime(2026, 1, 1))
    )
    assert delta["schedule"] == {"type": "delta", "seconds": 1800.0}
    assert SerializedDAG.from_dict(delta).timetable.delta == timedelta(minutes=30)


@pytest.mark.parametrize(
    ("deadline", "expected"),
    [
        (
            timedelta(hours=2),
            {"reference": "scheduled_time", "time_of_day": None, "interval": 7200.0,
             "recent_runs": None},
        ),
        (
            Deadline(DeadlineReference.DAGRUN_QUEUED_AT, timedelta(minutes=15)),
            {"reference": "queued_at", "time_of_day": None, "interval": 900.0,
             "recent_runs": None},
        ),
        (
            Deadline(DeadlineReference.TIME_OF_DAY("07:30"), timedelta(days=1)),
            {"reference": "time_of_day", "time_of_day": "07:30:00", "interval": 86400.0,
             "recent_runs": None},
        ),
        (
            Deadline(DeadlineReference.DAGRUN_LOGICAL_DATE, Deadline.recent_runs(n=5, factor=2)),
            {"reference": "logical_date", "time_of_day": None, "interval": None,
             "recent_runs": {"n": 5, "factor": 2.0, "min_runs": 3}},
        ),
    ],
)  # fmt: skip
def test_deadline_round_trips_through_the_serialized_form(deadline, expected):
    original = DAG(
        "timed",
        schedule="@daily",
        start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Amsterdam"),
        deadline=deadline,
    )
    data = json.loads(json.dumps(serialize_dag(original)))
    assert data["deadline"] == expected
    plan = SerializedDAG.from_dict(data)
    assert plan.deadline == original.deadline
    assert serialize_dag(DAG("untimed"))["deadline"] is None
    assert SerializedDAG.from_dict(serialize_dag(DAG("untimed"))).deadline is None
    other = DAG(
        "timed", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Amsterdam")
    )
    assert dag_hash(serialize_dag(other)) != dag_hash(data)  # a deadline changes the hash
