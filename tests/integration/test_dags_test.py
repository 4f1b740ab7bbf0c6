"""`dags test` semantics: one in-process run through the runner, recorded in the metastore."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pendulum
import pytest
from sqlalchemy import select

from engine import (
    DAG,
    BashOperator,
    EmptyOperator,
    Param,
    PythonOperator,
    PythonSensor,
    SkipTask,
    TriggerRule,
    task,
)
from engine.exceptions import ParamValidationError
from engine.execution.dag_test import run_dag_in_process
from engine.states import DagRunState, TaskState
from engine.store import runs
from engine.store.models import DagRun, StateTransition

LOGICAL_DATE = datetime(2026, 3, 1, tzinfo=UTC)


class FakeClock:
    """Wall clock for the run; `sleep` advances it instead of waiting."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, tzinfo=UTC)
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def run(store, config):
    def _run(dag, **kwargs):
        kwargs.setdefault("logical_date", LOGICAL_DATE)
        return run_dag_in_process(store, config, dag, **kwargs)

    return _run


def ti_states(store, dag_id, run_id) -> dict[str, str]:
    with store.session() as session:
        return {ti.task_id: ti.state for ti in runs.get_task_instances(session, dag_id, run_id)}


def test_chain_runs_in_order_passes_xcom_and_records_attempts_and_logs(run, store):
    with DAG("chain", schedule=None) as dag:

        @task
        def produce() -> int:
            print("producing")
            return 21

        @task
        def double(value: int) -> int:
            return value * 2

        @task
        def check(value: int) -> None:
            assert value == 42, value

        check(double(produce()))

    report = run(dag)
    assert report.state is DagRunState.SUCCESS
    assert [a.task_id for a in report.attempts] == ["produce", "double", "check"]
    assert ti_states(store, "chain", report.run_id) == dict.fromkeys(
        ("produce", "double", "check"), "success"
    )
    with store.session() as session:
        tries = runs.list_tries(session, "chain", report.run_id)
        assert [(t.task_id, t.try_number, t.state) for t in tries] == [
            ("check", 1, "success"),
            ("double", 1, "success"),
            ("produce", 1, "success"),
        ]
        assert session.execute(
            select(DagRun.state).where(DagRun.run_id == report.run_id)
        ).scalar_one() == ("success")
    produce_log = report.attempts[0].log_path
    assert produce_log.name == "attempt=1.log"
    assert produce_log.parent.name == "produce"
    assert "producing" in produce_log.read_text()


def test_upstream_failure_propagates_and_all_done_still_runs(run, store):
    with DAG("failing", schedule=None) as dag:
        boom = PythonOperator(task_id="boom", python_callable=lambda: 1 / 0)
        after = EmptyOperator(task_id="after")
        cleanup = EmptyOperator(task_id="cleanup", trigger_rule=TriggerRule.ALL_DONE)
        boom >> after >> cleanup

    report = run(dag)
    # As in Airflow, the run's state follows its leaves: the all_done leaf succeeded.
    assert report.state is DagRunState.SUCCESS
    assert ti_states(store, "failing", report.run_id) == {
        "boom": "failed",
        "after": "upstream_failed",
        "cleanup": "success",
    }
    assert "ZeroDivisionError" in report.attempts[0].error
    cleanup.trigger_rule = TriggerRule.ALL_SUCCESS
    assert run(dag).state is DagRunState.FAILED


def test_branching_skips_the_other_path_and_none_failed_join_runs(run, store):
    with DAG("branchy", schedule=None) as dag:

        @task.branch
        def pick() -> str:
            return "left"

        left, right = EmptyOperator(task_id="left"), EmptyOperator(task_id="right")
        right_after = EmptyOperator(task_id="right_after")
        join = EmptyOperator(task_id="join", trigger_rule=TriggerRule.NONE_FAILED)
        chosen = pick()
        chosen >> left >> join
        chosen >> right >> right_after >> join

    report = run(dag)
    assert report.state is DagRunState.SUCCESS
    assert ti_states(store, "branchy", report.run_id) == {
        "pick": "success",
        "left": "success",
        "right": "skipped",
        "right_after": "skipped",
        "join": "success",
    }


def test_retry_waits_its_delay_then_succeeds(run, store):
    calls = []

    def flaky(ti):
        calls.append(ti.try_number)
        if ti.try_number < 3:
            raise ConnectionError("not yet")

    with DAG("retrying", schedule=None) as dag:
        PythonOperator(
            task_id="flaky", python_callable=flaky, retries=3, retry_delay=timedelta(seconds=30)
        )

    clock = FakeClock()
    report = run(dag, clock=clock, sleep=clock.sleep)
    assert report.state is DagRunState.SUCCESS
    assert calls == [1, 2, 3]
    assert clock.slept == [30.0, 30.0]
    assert [a.state for a in report.attempts] == ["up_for_retry", "up_for_retry", "success"]
    with store.session() as session:
        moves = session.execute(
            select(StateTransition.from_state, StateTransition.to_state)
            .where(StateTransition.task_id == "flaky")
            .order_by(StateTransition.id)
        ).all()
    assert [tuple(m) for m in moves].count(("running", "up_for_retry")) == 2
    assert [tuple(m) for m in moves].count(("up_for_retry", "scheduled")) == 2


def test_retries_exhausted_fail_the_task(run, store):
    with DAG("exhausted", schedule=None) as dag:
        PythonOperator(
            task_id="always",
            python_callable=lambda: 1 / 0,
            retries=1,
            retry_delay=timedelta(seconds=0),
        )

    report = run(dag)
    assert [a.state for a in report.attempts] == ["up_for_retry", "failed"]
    assert report.state is DagRunState.FAILED


def test_a_rescheduled_sensor_is_waited_for_and_poked_again_within_one_try(run, store, emitted):
    """As Airflow's `dags test`: the run waits for the sensor's next poke and pokes again;
    a task that is ready meanwhile runs first."""
    calls: list[int] = []

    def ready(ti) -> bool:
        calls.append(ti.try_number)
        print(f"poke {len(calls)}")
        return len(calls) == 3

    clock = FakeClock()
    with DAG("rescheduling", schedule=None) as dag:
        sensor = PythonSensor(
            task_id="wait", python_callable=ready, mode="reschedule", poke_interval=30
        )
        sensor >> EmptyOperator(task_id="after")
        EmptyOperator(task_id="meanwhile")
    sensor._now = clock  # the sensor's wall clock is the run's

    lines: list[str] = []
    report = run(dag, clock=clock, sleep=clock.sleep, echo=lines.append)
    assert report.state is DagRunState.SUCCESS
    assert [(a.task_id, a.state, a.try_number) for a in report.attempts] == [
        ("wait", "up_for_reschedule", 1),
        ("meanwhile", "success", 1),
        ("wait", "up_for_reschedule", 1),
        ("wait", "success", 1),
        ("after", "success", 1),
    ]
    assert calls == [1, 1, 1]  # three pokes, one try
    assert clock.slept == [30.0, 30.0]
    assert "  waiting 30.0 s to poke wait" in lines
    with store.session() as session:
        tries = runs.list_tries(session, "rescheduling", report.run_id)
        assert [(t.try_number, t.state) for t in tries if t.task_id == "wait"] == [(1, "success")]
    log_text = report.attempts[0].log_path.read_text()
    assert report.attempts[0].log_path.name == "attempt=1.log"
    assert all(f"poke {n}" in log_text for n in (1, 2, 3))  # appended, poke after poke
    wait = {"dag_id": "rescheduling", "task_id": "wait"}
    finishes = [
        labels["state"] for labels, _ in emitted.values("ti.finish") if labels["task_id"] == "wait"
    ]
    assert finishes == ["up_for_reschedule", "up_for_reschedule", "success"]
    # timed once, for the whole try: 60 s of the run's clock
    assert [value for labels, value in emitted.values("task.duration") if labels == wait] == [
        pytest.approx(60.0, abs=1.0)
    ]


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_a_timed_out_sensor_fails_without_using_its_retries(run, mode):
    clock = FakeClock()
    with DAG("timing_out", schedule=None) as dag:
        sensor = PythonSensor(
            task_id="never",
            python_callable=lambda: False,
            mode=mode,
            poke_interval=0.05,
            timeout=0.2,
            retries=3,
            retry_delay=timedelta(0),
        )
    sensor._now = clock

    report = run(dag, clock=clock, sleep=clock.sleep)
    assert [(a.state, a.try_number) for a in report.attempts][-1] == ("failed", 1)
    assert {a.try_number for a in report.attempts} == {1}
    assert "Sensor has timed out" in report.attempts[-1].error
    assert report.state is DagRunState.FAILED


def test_execution_timeout_kills_a_sleeping_bash_task_and_its_child(run, store, tmp_path):
    pidfile = tmp_path / "child.pid"
    with DAG("timeouts", schedule=None) as dag:
        BashOperator(
            task_id="sleepy",
            bash_command=f"sleep 60 & echo $! > {pidfile}; wait",
            execution_timeout=timedelta(seconds=1),
        )

    started = time.monotonic()
    report = run(dag)
    assert time.monotonic() - started < 20
    assert report.attempts[0].state is TaskState.FAILED
    assert "timed out" in report.attempts[0].error
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the timed-out task's child process is still running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for its parent is dead too
        return stat.read().split()[2] != "Z"


def test_callbacks_run_and_a_raising_callback_changes_nothing(run, store):
    seen: list[str] = []

    def on_failure(context):
        seen.append(f"failure:{context['ti'].task_id}:{context['exception']}")

    def raising(context):
        raise RuntimeError("callback bug")

    def on_dag_failure(context):
        seen.append(f"dag:{context['run_id']}")

    with DAG("callbacks", schedule=None, on_failure_callback=on_dag_failure) as dag:
        PythonOperator(
            task_id="boom",
            python_callable=lambda: 1 / 0,
            on_failure_callback=[raising, on_failure],
        )
        EmptyOperator(task_id="fine", on_success_callback=raising)

    report = run(dag)
    assert ti_states(store, "callbacks", report.run_id) == {"boom": "failed", "fine": "success"}
    assert seen == [
        "failure:boom:ZeroDivisionError: division by zero",
        f"dag:{report.run_id}",
    ]
    with store.session() as session:
        records = runs.list_callbacks(session, "callbacks", report.run_id)
    outcomes = [(r.task_id, r.kind, r.callback.rsplit(".", 1)[-1], r.status) for r in records]
    assert ("boom", "on_failure_callback", "raising", "failed") in outcomes
    assert ("boom", "on_failure_callback", "on_failure", "success") in outcomes
    assert ("fine", "on_success_callback", "raising", "failed") in outcomes
    assert (None, "on_failure_callback", "on_dag_failure", "success") in outcomes
    assert all("callback bug" in r.error for r in records if r.status == "failed")


def test_template_error_fails_the_task_with_a_clear_message(run):
    with DAG("templating", schedule=None) as dag:
        BashOperator(task_id="bad", bash_command="echo {{ ds | no_such_filter }}")

    report = run(dag)
    assert report.attempts[0].state is TaskState.FAILED
    assert "bash_command" in report.attempts[0].error
    assert "no_such_filter" in report.attempts[0].error


def test_templates_see_the_run_context(run, store):
    with DAG(
        "context", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1), params={"n": 1}
    ) as dag:
        BashOperator(
            task_id="show",
            bash_command="echo {{ ds }} {{ ds_nodash }} {{ params.n }} {{ run_id }}",
        )

    report = run(dag, conf={"n": 5})
    assert report.state is DagRunState.SUCCESS
    log_text = report.attempts[0].log_path.read_text()
    assert f"2026-03-01 20260301 5 {report.run_id}" in log_text


def test_bad_conf_is_refused_before_anything_is_written(run, store):
    with DAG("params", schedule=None, params={"n": Param(1, type="integer")}) as dag:
        EmptyOperator(task_id="t")

    with pytest.raises(ParamValidationError, match="n"):
        run(dag, conf={"n": "not a number"})
    with store.session() as session:
        assert runs.list_dag_runs(session, dag_id="params") == []


def test_skip_task_skips_downstream(run, store):
    def skipper():
        raise SkipTask("nothing to do today")

    with DAG("skipping", schedule=None) as dag:
        PythonOperator(task_id="maybe", python_callable=skipper) >> EmptyOperator(task_id="next")

    report = run(dag)
    assert report.state is DagRunState.SUCCESS
    assert ti_states(store, "skipping", report.run_id) == {"maybe": "skipped", "next": "skipped"}


def test_secret_variable_is_masked_in_the_task_log(run, store):
    from engine.sdk.variables import Variable

    Variable.set("api_token", "s3cr3t-value-123")

    def leak():
        print("token is", Variable.get("api_token"))

    with DAG("masking", schedule=None) as dag:
        PythonOperator(task_id="leak", python_callable=leak)

    report = run(dag)
    text = report.attempts[0].log_path.read_text()
    assert "s3cr3t-value-123" not in text
    assert "token is ***" in text


def test_rerunning_the_same_date_replaces_the_test_run(run, store):
    with DAG("again", schedule=None) as dag:
        EmptyOperator(task_id="t")

    first = run(dag)
    second = run(dag)
    assert first.run_id == second.run_id
    with store.session() as session:
        assert len(runs.list_dag_runs(session, dag_id="again")) == 1
        assert len(runs.list_tries(session, "again", second.run_id)) == 1
