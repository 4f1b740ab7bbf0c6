"""Cross-DAG dependencies through the real scheduler loop (local executor, drain mode):
TriggerDagRunOperator starting and awaiting another DAG's run, ExternalTaskSensor waiting
for another DAG's tasks; plus the trigger's execute() against the metastore directly."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from engine import api
from engine.exceptions import SkipTask, TaskError
from engine.execution import get_executor
from engine.parsing.parser import process_folders
from engine.scheduling.scheduler import Scheduler
from engine.sdk.cross_dag import (
    XCOM_LOGICAL_DATE_ISO,
    XCOM_RUN_ID,
    ExternalTaskSensor,
    TriggerDagRunOperator,
)
from engine.states import DagRunState
from engine.store import runs, transitions
from engine.store.models import DagRun, TaskInstance, TaskTry

HEADER = """
import time
from datetime import timedelta
from engine import DAG, PythonOperator, SkipTask, TaskGroup
from engine.sdk.cross_dag import ExternalTaskSensor, TriggerDagRunOperator
"""
DAY = datetime(2026, 3, 2, tzinfo=UTC)
TARGET = """
with DAG("target", schedule=None):
    PythonOperator(task_id="t", python_callable=print)
"""


@pytest.fixture
def loop_config(store):
    from engine import runtime

    return runtime.get_config().with_overrides(
        core__load_examples=False,
        core__dags_are_paused_at_creation=False,
        scheduler__loop_interval=0.1,
    )


@pytest.fixture
def add_dags(store, loop_config):
    """Write DAG files (file name -> source) to the DAGs folder and parse them."""
    folder = loop_config["core.dags_folder"]

    def _add(**sources: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, source in sources.items():
            (folder / f"{name}.py").write_text(HEADER + textwrap.dedent(source))
        report = process_folders(store, loop_config)
        assert report.import_errors == 0, [r.error for r in report.results]

    return _add


def drain(store, config) -> None:
    Scheduler(store, config, get_executor("local", config, store)).run(drain=True, grace=5)


def trigger(store, dag_id: str, when: datetime, run_id: str | None = None, conf=None) -> str:
    run = api.trigger_dag(store, dag_id, logical_date=when, run_id=run_id, conf=conf, actor="test")
    return run.run_id


def dag_runs(store, dag_id: str) -> list[DagRun]:
    with store.session() as session:
        return list(
            session.execute(
                select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.logical_date)
            ).scalars()
        )


def task_instances(store, dag_id: str, run_id: str) -> dict[str, TaskInstance]:
    with store.session() as session:
        return {ti.task_id: ti for ti in runs.get_task_instances(session, dag_id, run_id)}


def tries(store, dag_id: str, run_id: str) -> dict[str, list[TaskTry]]:
    """task_id -> its attempts, in order."""
    found: dict[str, list[TaskTry]] = {}
    with store.session() as session:
        for attempt in runs.list_tries(session, dag_id, run_id):
            found.setdefault(attempt.task_id, []).append(attempt)
    return found


def xcom(store, dag_id: str, run_id: str, task_id: str, key: str) -> Any:
    with store.session() as session:
        return runs.get_xcoms(session, dag_id=dag_id, run_id=run_id, task_ids=[task_id], key=key)[
            task_id
        ]


# -- TriggerDagRunOperator through the loop ----------------------------------------------


def test_trigger_passes_conf_and_waits_for_the_target_runs_outcome(store, loop_config, add_dags):
    add_dags(
        child="""
        def work(dag_run):
            time.sleep(1)
            return dag_run.conf

        with DAG("child", schedule=None):
            PythonOperator(task_id="work", python_callable=work)
        """,
        broken_child="""
        def boom():
            time.sleep(0.5)
            raise RuntimeError("no")

        with DAG("broken_child", schedule=None):
            PythonOperator(task_id="boom", python_callable=boom)
        """,
        parent="""
        def report(ti):
            return [ti.xcom_pull(task_ids="wait_child", key="trigger_run_id"),
                    ti.xcom_pull(task_ids="wait_child", key="trigger_logical_date_iso")]

        with DAG("parent", schedule=None, params={"n": 3}):
            wait = TriggerDagRunOperator(
                task_id="wait_child", trigger_dag_id="child",
                conf={"n": "{{ params.n }}", "parent_run": "{{ run_id }}"},
                wait_for_completion=True, poke_interval=0.2)
            wait >> PythonOperator(task_id="after", python_callable=report)
            TriggerDagRunOperator(
                task_id="wait_broken", trigger_dag_id="{{ 'broken' + '_child' }}",
                wait_for_completion=True, poke_interval=0.2)
        """,
    )
    parent_run = trigger(store, "parent", DAY)
    drain(store, loop_config)

    (child,) = dag_runs(store, "child")
    assert child.state == "success"
    assert child.run_type == "manual"
    assert child.conf == {"n": "3", "parent_run": parent_run}
    assert child.run_id == f"manual__{child.logical_date.isoformat()}"
    parent = task_instances(store, "parent", parent_run)
    assert parent["wait_child"].state == "success"
    # it polled until the child run had succeeded, and only then ended
    assert parent["wait_child"].end_date >= child.end_date
    assert xcom(store, "parent", parent_run, "after", "return_value") == [
        child.run_id,
        child.logical_date.isoformat(),
    ]

    (broken,) = dag_runs(store, "broken_child")
    assert broken.state == "failed"
    assert parent["wait_broken"].state == "failed"
    assert parent["wait_broken"].end_date >= broken.end_date
    error = tries(store, "parent", parent_run)["wait_broken"][-1].error
    assert f"run {broken.run_id!r} of DAG 'broken_child' ended in state 'failed'" in error


def test_trigger_without_waiting_ends_before_the_target_runs(store, loop_config, add_dags):
    add_dags(
        child="""
        with DAG("child", schedule=None):
            PythonOperator(task_id="work", python_callable=lambda: time.sleep(1))
        """,
        parent="""
        with DAG("parent", schedule=None):
            TriggerDagRunOperator(task_id="go", trigger_dag_id="child",
                                  trigger_run_id="from__{{ run_id }}", logical_date="{{ ds }}")
        """,
    )
    parent_run = trigger(store, "parent", DAY + timedelta(hours=5))
    drain(store, loop_config)
    (child,) = dag_runs(store, "child")
    assert (child.run_id, child.logical_date, child.state) == (
        f"from__{parent_run}",
        DAY,
        "success",
    )
    go = task_instances(store, "parent", parent_run)["go"]
    work = task_instances(store, "child", child.run_id)["work"]
    assert go.state == "success"
    assert go.end_date < work.end_date
    assert xcom(store, "parent", parent_run, "go", XCOM_RUN_ID) == child.run_id
    assert xcom(store, "parent", parent_run, "go", XCOM_LOGICAL_DATE_ISO) == DAY.isoformat()


def test_an_existing_run_fails_is_reset_or_skipped(store, loop_config, add_dags):
    add_dags(
        target="""
        with DAG("target", schedule=None):
            PythonOperator(task_id="work", python_callable=lambda: None)
        """
    )
    for day, name in enumerate(["taken-fail", "taken-reset", "taken-skip", "dated"], start=1):
        trigger(store, "target", DAY + timedelta(days=day), run_id=name, conf={"orig": day})
    drain(store, loop_config)
    add_dags(
        again="""
        with DAG("again", schedule=None):
            TriggerDagRunOperator(task_id="fail", trigger_dag_id="target",
                                  trigger_run_id="taken-fail")
            TriggerDagRunOperator(task_id="reset", trigger_dag_id="target",
                                  trigger_run_id="taken-reset", reset_dag_run=True,
                                  conf={"new": True}, wait_for_completion=True,
                                  poke_interval=0.2)
            TriggerDagRunOperator(task_id="skip", trigger_dag_id="target",
                                  trigger_run_id="taken-skip", skip_when_already_exists=True)
            TriggerDagRunOperator(task_id="same_date", trigger_dag_id="target",
                                  logical_date="2026-03-06T00:00:00+00:00")
            TriggerDagRunOperator(task_id="unknown", trigger_dag_id="no_such_dag")
        """
    )
    again_run = trigger(store, "again", DAY)
    drain(store, loop_config)

    states = {k: ti.state for k, ti in task_instances(store, "again", again_run).items()}
    assert states == {
        "fail": "failed",
        "reset": "success",
        "skip": "skipped",
        "same_date": "failed",
        "unknown": "failed",
    }
    errors = {
        task_id: attempts[-1].error
        for task_id, attempts in tries(store, "again", again_run).items()
    }
    assert "already has a run 'taken-fail'" in errors["fail"]
    assert "reset_dag_run=True" in errors["fail"]
    assert "already has a run at 2026-03-06T00:00:00+00:00 ('dated')" in errors["same_date"]
    assert "cannot trigger DAG 'no_such_dag': DAG 'no_such_dag' not found" in errors["unknown"]
    assert "skip_when_already_exists" in errors["skip"]
    assert xcom(store, "again", again_run, "reset", XCOM_RUN_ID) == "taken-reset"

    target = {run.run_id: run for run in dag_runs(store, "target")}
    assert sorted(target) == ["dated", "taken-fail", "taken-reset", "taken-skip"]  # none created
    assert {run.state for run in target.values()} == {"success"}
    assert target["taken-reset"].conf == {"orig": 2}  # a reset keeps the run's conf
    attempts = {name: len(tries(store, "target", name)["work"]) for name in target}
    assert attempts == {"dated": 1, "taken-fail": 1, "taken-reset": 2, "taken-skip": 1}


# -- ExternalTaskSensor through the loop -------------------------------------------------


def test_external_task_sensor_outcomes(store, loop_config, add_dags):
    add_dags(
        producer="""
        with DAG("producer", schedule=None):
            PythonOperator(task_id="produce", python_callable=lambda: time.sleep(1))
            with TaskGroup("stage"):
                PythonOperator(task_id="a", python_callable=lambda: time.sleep(0.5))
                PythonOperator(task_id="b", python_callable=lambda: None)
        """,
        broken="""
        def boom():
            raise RuntimeError("no")

        def skipper():
            raise SkipTask("not today")

        with DAG("broken", schedule=None):
            PythonOperator(task_id="boom", python_callable=boom)
            PythonOperator(task_id="skipper", python_callable=skipper)
        """,
        consumer="""
        fast = dict(poke_interval=0.2, timeout=60)
        with DAG("consumer", schedule=None):
            ExternalTaskSensor(task_id="wait_task", external_dag_id="producer",
                               external_task_id="produce", **fast)
            ExternalTaskSensor(task_id="wait_run", external_dag_id="producer", **fast)
            ExternalTaskSensor(task_id="wait_group", external_dag_id="producer",
                               external_task_group_id="stage", **fast)
            ExternalTaskSensor(task_id="wait_delta", external_dag_id="producer",
                               external_task_id="produce",
                               execution_delta=timedelta(days=1), **fast)
            ExternalTaskSensor(task_id="wait_fn", external_dag_id="producer",
                               external_task_ids=["produce", "stage.b"],
                               execution_date_fn=lambda dt: [dt, dt - timedelta(days=1)],
                               **fast)
            ExternalTaskSensor(task_id="wait_failed", external_dag_id="broken",
                               external_task_id="boom", failed_states=["failed"], **fast)
            ExternalTaskSensor(task_id="wait_failed_soft", external_dag_id="broken",
                               external_task_id="boom", failed_states=["failed"],
                               soft_fail=True, **fast)
            ExternalTaskSensor(task_id="wait_skipped", external_dag_id="broken",
                               external_task_id="skipper", skipped_states=["skipped"], **fast)
            ExternalTaskSensor(task_id="wait_timeout", external_dag_id="producer",
                               external_task_id="produce", execution_delta=timedelta(days=9),
                               poke_interval=0.2, timeout=1, soft_fail=True)
            ExternalTaskSensor(task_id="wait_missing", external_dag_id="producer",
                               external_task_id="nope", check_existence=True, **fast)
        """,
    )
    consumer_run = trigger(store, "consumer", DAY)
    produced = trigger(store, "producer", DAY)
    trigger(store, "producer", DAY - timedelta(days=1))
    trigger(store, "broken", DAY)
    drain(store, loop_config)

    sensors = task_instances(store, "consumer", consumer_run)
    assert {task_id: ti.state for task_id, ti in sensors.items()} == {
        "wait_task": "success",
        "wait_run": "success",
        "wait_group": "success",
        "wait_delta": "success",
        "wait_fn": "success",
        "wait_failed": "failed",
        "wait_failed_soft": "skipped",
        "wait_skipped": "skipped",
        "wait_timeout": "skipped",
        "wait_missing": "failed",
    }
    producer = task_instances(store, "producer", produced)
    (producer_run,) = [run for run in dag_runs(store, "producer") if run.run_id == produced]
    assert sensors["wait_task"].end_date >= producer["produce"].end_date
    assert sensors["wait_group"].end_date >= producer["stage.a"].end_date
    assert sensors["wait_run"].end_date >= producer_run.end_date
    errors = {
        t: attempts[-1].error for t, attempts in tries(store, "consumer", consumer_run).items()
    }
    assert (
        "external task(s) boom of DAG 'broken' reached a state in failed_states"
        in errors["wait_failed"]
    )
    assert f"boom at {DAY.isoformat()} is failed" in errors["wait_failed"]
    assert "Skipping due to soft_fail" in errors["wait_failed_soft"]
    assert "skipper at" in errors["wait_skipped"] and "skipped_states" in errors["wait_skipped"]
    assert "Sensor has timed out" in errors["wait_timeout"]
    assert "the external task 'nope' does not exist in DAG 'producer'" in errors["wait_missing"]
    assert sensors["wait_missing"].duration < 10  # at once, not at its 60 s timeout


# -- TriggerDagRunOperator.execute against the metastore, without the loop ----------------


@dataclass
class FakeTI:
    dag_id: str = "caller"
    run_id: str = "caller_run"
    task_id: str = "go"
    pushed: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def run_operator(operator: TriggerDagRunOperator) -> FakeTI:
    ti = FakeTI(task_id=operator.task_id)
    operator.execute({"ti": ti})
    return ti


def waiting_trigger(**options: Any) -> TriggerDagRunOperator:
    """A trigger of run r1 of DAG target that waits for its outcome."""
    return TriggerDagRunOperator(
        task_id="go",
        trigger_dag_id="target",
        trigger_run_id="r1",
        wait_for_completion=True,
        **options,
    )


def test_a_paused_target_gets_a_queued_run_at_the_given_date(store, add_dags):
    add_dags(target=TARGET)
    api.set_paused(store, "target", True, actor="test")
    ti = run_operator(
        TriggerDagRunOperator(
            task_id="go", trigger_dag_id="target", logical_date="2026-05-01T10:00", conf={"k": 1}
        )
    )
    (run,) = dag_runs(store, "target")
    assert (run.state, run.conf, run.logical_date) == (
        "queued",
        {"k": 1},
        datetime(2026, 5, 1, 10, tzinfo=UTC),
    )
    assert ti.pushed == {
        XCOM_RUN_ID: "manual__2026-05-01T10:00:00+00:00",
        XCOM_LOGICAL_DATE_ISO: "2026-05-01T10:00:00+00:00",
    }


def test_waiting_polls_every_poke_interval_until_an_allowed_state(store, add_dags):
    add_dags(target=TARGET)
    operator = waiting_trigger(
        poke_interval=7, allowed_states=["failed"], failed_states=["success"]
    )
    path = [DagRunState.RUNNING, DagRunState.FAILED]
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the run moves one step per poll
        slept.append(seconds)
        with store.session() as session:
            run = runs.get_dag_run(session, "target", "r1")
            transitions.transition_dag_run(
                session, run.id, expected=run.state, to=path[len(slept) - 1], at=datetime.now(UTC)
            )

    operator._sleep = sleep
    run_operator(operator)
    assert slept == [7, 7]
    assert api.dag_run_state(store, "target", "r1") == "failed"


def test_a_failed_state_while_waiting_fails_with_the_run_and_its_state(store, add_dags):
    add_dags(target=TARGET)
    operator = waiting_trigger(poke_interval=1, failed_states=["queued"])
    operator._sleep = lambda seconds: None
    with pytest.raises(TaskError, match="run 'r1' of DAG 'target' ended in state 'queued'"):
        run_operator(operator)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"conf": {"when": datetime(2026, 1, 1)}}, TaskError, "conf is not JSON-serializable"),
        ({"conf": "{not json"}, TaskError, "conf is not valid JSON"),
        ({"logical_date": "yesterday-ish"}, TaskError, "logical_date 'yesterday-ish' is not"),
        ({"conf": {"n": "x"}}, TaskError, "cannot trigger DAG 'target': param 'n'"),
        ({"trigger_run_id": "x" * 300}, TaskError, "run id 'xxx"),
        ({"wait_for_completion": "maybe"}, TaskError, "wait_for_completion rendered to 'maybe'"),
    ],
)
def test_bad_input_fails_the_task_and_writes_nothing(store, add_dags, options, error, match):
    add_dags(
        target="""
        from engine import Param
        with DAG("target", schedule=None, params={"n": Param(1, type="integer")}):
            PythonOperator(task_id="t", python_callable=print)
        """
    )
    with pytest.raises(error, match=match):
        run_operator(TriggerDagRunOperator(task_id="go", trigger_dag_id="target", **options))
    assert dag_runs(store, "target") == []


def test_skip_when_already_exists_raises_skip_with_the_run(store, add_dags):
    add_dags(target=TARGET)
    trigger(store, "target", DAY, run_id="r1")
    operator = TriggerDagRunOperator(
        task_id="go", trigger_dag_id="target", trigger_run_id="r1", skip_when_already_exists="True"
    )
    with pytest.raises(SkipTask, match="already has the run 'r1'"):
        run_operator(operator)


# -- ExternalTaskSensor.poke against the metastore, without the loop -----------------------


@contextlib.contextmanager
def selects(store) -> Iterator[list[str]]:
    """The SELECT statements sent to the metastore inside the block."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", record)


PRODUCER = """
with DAG("producer", schedule=None):
    for name in "abc":
        PythonOperator(task_id=name, python_callable=print)
    with TaskGroup("stage"):
        PythonOperator(task_id="d", python_callable=print)
"""


@pytest.mark.parametrize(
    "target",
    [
        {"external_task_ids": ["a", "b", "c"]},
        {"external_task_group_id": "stage"},
        {},
    ],
    ids=["tasks", "group", "run"],
)
def test_a_poke_reads_every_task_and_date_in_one_query(store, add_dags, target):
    add_dags(producer=PRODUCER)
    for day in (DAY, DAY - timedelta(days=1)):
        trigger(store, "producer", day)
    waiting = ExternalTaskSensor(
        task_id="wait",
        external_dag_id="producer",
        execution_date_fn=lambda dt: [dt, dt - timedelta(days=1)],
        check_existence=True,
        **target,
    )
    context = {"logical_date": DAY}
    with selects(store) as first:
        assert waiting.poke(context) is False  # queued runs, tasks not started
    with selects(store) as later:
        assert waiting.poke(context) is False
    assert len(first) == 2  # the existence check (and the group's members), once
    assert len(later) == 1


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ({"external_dag_id": "nowhere"}, "the external DAG 'nowhere' does not exist"),
        (
            {"external_dag_id": "producer", "external_task_group_id": "nope"},
            "the external task group 'nope' does not exist in DAG 'producer'",
        ),
        (
            {"external_dag_id": "producer", "external_task_ids": ["a", "zz"]},
            "the external task 'zz' does not exist in DAG 'producer'",
        ),
    ],
)
def test_check_existence_fails_the_first_poke(store, add_dags, target, match):
    add_dags(producer=PRODUCER)
    waiting = ExternalTaskSensor(task_id="wait", check_existence=True, **target)
    with pytest.raises(TaskError, match=match):
        waiting.poke({"logical_date": DAY})


def test_without_check_existence_a_missing_dag_is_waited_for(store):
    waiting = ExternalTaskSensor(task_id="wait", external_dag_id="nowhere", external_task_id="t")
    assert waiting.poke({"logical_date": DAY}) is False


def test_a_deleted_dag_fails_check_existence(store, add_dags, loop_config):
    add_dags(producer=PRODUCER)
    (loop_config["core.dags_folder"] / "producer.py").unlink()
    process_folders(store, loop_config)
    waiting = ExternalTaskSensor(task_id="wait", external_dag_id="producer", check_existence=True)
    with pytest.raises(TaskError, match="the external DAG 'producer' was deleted"):
        waiting.poke({"logical_date": DAY})
