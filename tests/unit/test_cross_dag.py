"""Cross-DAG operators without a metastore: argument checks, dates to wait for, verdicts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from engine import DAG, PythonOperator
from engine.exceptions import DagDefinitionError, SkipTask, TaskError
from engine.parsing.serialization import serialize_dag
from engine.sdk.cross_dag import ExternalTaskSensor, TriggerDagRunOperator
from engine.sdk.templating import render_template_fields

DAY = datetime(2026, 3, 2, tzinfo=UTC)


def sensor(**options) -> ExternalTaskSensor:
    return ExternalTaskSensor(task_id="wait", external_dag_id="other", **options)


# -- TriggerDagRunOperator -----------------------------------------------------------------


def test_trigger_defaults_are_airflows():
    op = TriggerDagRunOperator(task_id="go", trigger_dag_id="other")
    assert (op.allowed_states, op.failed_states, op.poke_interval) == (
        ("success",),
        ("failed",),
        60,
    )
    assert op.reset_dag_run is False and op.wait_for_completion is False
    # no allowed states means success; an explicit empty failed_states means none
    op = TriggerDagRunOperator(
        task_id="go", trigger_dag_id="other", allowed_states=None, failed_states=[]
    )
    assert (op.allowed_states, op.failed_states) == (("success",), ())


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"allowed_states": ["done"]}, "allowed_states has 'done', which is not a DAG run state"),
        ({"failed_states": ["skipped"]}, "allowed: queued, running, success, failed"),
        ({"allowed_states": ["success"], "failed_states": ["success"]}, "cannot be in both"),
        ({"logical_date": 20260101}, "logical_date must be a string, a datetime or None"),
        ({"poke_interval": -1}, "poke_interval must be a number of seconds >= 0"),
    ],
)
def test_trigger_refuses_bad_arguments(options, match):
    with pytest.raises(DagDefinitionError, match=match):
        TriggerDagRunOperator(task_id="go", trigger_dag_id="other", **options)


def test_trigger_conf_from_an_upstream_task_is_an_edge():
    with DAG("d", schedule=None):
        make = PythonOperator(task_id="make", python_callable=dict)
        go = TriggerDagRunOperator(task_id="go", trigger_dag_id="other", conf=make.output)
    assert go.upstream_task_ids == {"make"}


# -- ExternalTaskSensor: arguments ---------------------------------------------------------


def test_sensor_defaults_and_target_kinds():
    whole_run = sensor()
    assert whole_run.external_task_ids is None
    assert (whole_run.allowed_states, whole_run.failed_states, whole_run.skipped_states) == (
        ("success",),
        (),
        (),
    )
    assert sensor(external_task_id="t").external_task_ids == ["t"]
    assert sensor(external_task_ids=[]).external_task_ids is None  # [] means the DAG run
    # task states are allowed for tasks and groups, not for a DAG run
    assert sensor(external_task_id="t", failed_states=["upstream_failed"]).failed_states == (
        "upstream_failed",
    )
    assert sensor(external_task_group_id="g", skipped_states=["skipped"]).skipped_states == (
        "skipped",
    )
    with pytest.raises(DagDefinitionError, match="'skipped', which is not a DAG run state"):
        sensor(skipped_states=["skipped"])


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"external_task_id": "a", "external_task_ids": ["b"]}, "give only one of"),
        ({"external_task_ids": ["a"], "external_task_group_id": "g"}, "give only one of"),
        ({"external_task_ids": ["a", "a"]}, "external_task_ids has duplicates"),
        ({"allowed_states": ["success"], "failed_states": ["success"]}, "appears twice"),
        ({"allowed_states": ["upstream_failed"]}, "not a DAG run state"),
        ({"external_task_id": "a", "allowed_states": ["done"]}, "'done', which is not a task"),
        (
            {"execution_delta": timedelta(days=1), "execution_date_fn": lambda dt: dt},
            "give execution_delta or execution_date_fn, not both",
        ),
        ({"execution_delta": 3600}, "execution_delta must be a timedelta"),
        ({"execution_date_fn": "yesterday"}, "execution_date_fn must be callable"),
        ({"mode": "smart"}, "sensor mode 'smart' is not supported; allowed: poke, reschedule"),
    ],
)
def test_sensor_refuses_bad_arguments(options, match):
    with pytest.raises(DagDefinitionError, match=match):
        sensor(**options)


def test_sensor_ids_are_templated():
    waiting = sensor(external_task_id="{{ prefix }}_load").prepare_for_execution()
    render_template_fields(waiting, {"prefix": "daily"})
    assert waiting._target_ids() == ["daily_load"]


def test_sensor_and_trigger_serialize():
    with DAG("d", schedule=None) as dag:
        sensor(external_task_id="t", poke_interval=5, timeout=30, soft_fail=True)
        TriggerDagRunOperator(task_id="go", trigger_dag_id="other")
    tasks = {task["task_id"]: task for task in serialize_dag(dag)["tasks"]}
    assert tasks["wait"]["operator"] == "ExternalTaskSensor"
    assert tasks["wait"]["sensor"]["timeout"] == 30 and tasks["wait"]["sensor"]["soft_fail"]
    assert tasks["go"]["operator"] == "TriggerDagRunOperator"


# -- ExternalTaskSensor: which dates ---------------------------------------------------------


def test_same_logical_date_or_shifted_by_execution_delta():
    context = {"logical_date": DAY}
    assert sensor()._dates(context) == [DAY]
    assert sensor(execution_delta=timedelta(hours=1))._dates(context) == [DAY - timedelta(hours=1)]


def test_execution_date_fn_gets_the_date_and_the_context_keys_it_names():
    seen = {}

    def dates(dt, ds, context):
        seen.update(ds=ds, context=context)
        return [dt, dt - timedelta(days=1), datetime(2026, 3, 1), dt]  # naive is UTC

    context = {"logical_date": DAY, "ds": "2026-03-02"}
    assert sensor(execution_date_fn=dates)._dates(context) == [DAY, DAY - timedelta(days=1)]
    assert seen == {"ds": "2026-03-02", "context": context}
    assert sensor(execution_date_fn=lambda dt: dt)._dates(context) == [DAY]


def test_execution_date_fn_must_return_dates():
    with pytest.raises(TaskError, match="must return a datetime or a list of them, not '2026"):
        sensor(execution_date_fn=lambda dt: "2026-03-01")._dates({"logical_date": DAY})


# -- ExternalTaskSensor: verdicts ----------------------------------------------------------

KEY = DAY.isoformat()


@pytest.mark.parametrize(
    ("found", "done"),
    [
        ({KEY: [("a", "success"), ("b", "success")]}, True),
        ({KEY: [("a", "success")]}, False),  # b has no task instance yet
        ({KEY: [("a", "success"), ("b", "running")]}, False),
        ({KEY: [("a", "success"), ("b", "failed")]}, False),  # failed_states is empty
        ({}, False),  # no run at that date
    ],
)
def test_done_when_every_task_is_in_an_allowed_state(found, done):
    assert sensor(external_task_ids=["a", "b"])._judge(found, ["a", "b"], [DAY]) is done


def test_every_date_must_be_done():
    earlier = DAY - timedelta(days=1)
    waiting = sensor(external_task_id="a")
    assert waiting._judge({KEY: [("a", "success")]}, ["a"], [DAY, earlier]) is False
    both = {KEY: [("a", "success")], earlier.isoformat(): [("a", "success")]}
    assert waiting._judge(both, ["a"], [DAY, earlier]) is True


def test_a_whole_run_is_judged_on_its_state():
    assert sensor()._judge({KEY: [("other", "success")]}, None, [DAY]) is True
    assert sensor()._judge({KEY: [("other", "running")]}, None, [DAY]) is False
    with pytest.raises(TaskError, match="the run of external DAG 'other' reached a state in"):
        sensor(failed_states=["failed"])._judge({KEY: [("other", "failed")]}, None, [DAY])


def test_failed_states_fail_before_skipped_states_skip():
    found = {KEY: [("a", "skipped"), ("b", "failed")]}
    options = {"external_task_ids": ["a", "b"], "failed_states": ["failed"]}
    with pytest.raises(TaskError, match=re.escape(f"failed_states: b at {KEY} is failed") + "$"):
        sensor(**options, skipped_states=["skipped"])._judge(found, ["a", "b"], [DAY])
    with pytest.raises(SkipTask, match="Skipping due to soft_fail"):
        sensor(**options, soft_fail=True)._judge(found, ["a", "b"], [DAY])
    with pytest.raises(
        SkipTask, match=re.escape(f"skipped_states: a at {KEY} is skipped. Skipping.")
    ):
        sensor(external_task_ids=["a", "b"], skipped_states=["skipped"])._judge(
            found, ["a", "b"], [DAY]
        )
