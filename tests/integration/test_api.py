"""engine.api against a real metastore, with DAGs stored by the DAG processor."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pendulum
import pytest
from sqlalchemy import select, update

from engine import api
from engine.exceptions import DagwatchError, NotFound, ParamValidationError
from engine.parsing.parser import process_folders
from engine.states import DagRunState, TaskState
from engine.store import runs, transitions
from engine.store.models import AuditLog, Dag, DagRun, StateTransition, TaskInstance, XCom

NOW = datetime(2026, 4, 10, 12, 0, tzinfo=UTC)
AMS = pendulum.timezone("Europe/Amsterdam")

DAGS = """
import pendulum
from engine import DAG, EmptyOperator, Param

with DAG(
    "pipeline",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Amsterdam"),
    catchup=False,
    params={"n": Param(1, type="integer")},
):
    extract = EmptyOperator(task_id="extract")
    transform = EmptyOperator(task_id="transform", retries=2)
    load = EmptyOperator(task_id="load")
    report = EmptyOperator(task_id="report")
    other = EmptyOperator(task_id="other")
    extract >> transform >> load
    transform >> report

with DAG("manual_only", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
    EmptyOperator(task_id="only")
"""

#: Legal paths from none (the state machine of engine.states) to each target state.
PATHS = {
    TaskState.SUCCESS: [TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING, "success"],
    TaskState.FAILED: [TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING, "failed"],
    TaskState.RUNNING: [TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING],
    TaskState.QUEUED: [TaskState.SCHEDULED, TaskState.QUEUED],
    TaskState.UPSTREAM_FAILED: [TaskState.UPSTREAM_FAILED],
}


@pytest.fixture
def dags_stored(store, config):
    folder = Path(config["core.dags_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipelines.py").write_text(textwrap.dedent(DAGS))
    report = process_folders(store, config.with_overrides(core__load_examples=False))
    assert report.import_errors == 0 and report.dags_found == 2
    return store


def set_task_states(store, run_id: str, states: dict[str, TaskState], dag_id="pipeline") -> None:
    """Walk each task instance along a legal path; entering running counts an attempt."""
    with store.session() as session:
        tis = {ti.task_id: ti for ti in runs.get_task_instances(session, dag_id, run_id)}
        for task_id, target in states.items():
            current = TaskState.NONE
            for step in PATHS[target]:
                step = TaskState(step)
                extra = {"try_number": tis[task_id].try_number + 1} if step == "running" else {}
                transitions.transition_task_instance(
                    session, tis[task_id].id, expected=current, to=step, at=NOW, **extra
                )
                current = step


def set_run_state(store, run_id: str, target: DagRunState, dag_id="pipeline") -> None:
    with store.session() as session:
        run = runs.get_dag_run(session, dag_id, run_id)
        if run.state == DagRunState.QUEUED:
            transitions.transition_dag_run(
                session, run.id, expected="queued", to="running", at=NOW, start_date=NOW
            )
        if target != DagRunState.RUNNING:
            transitions.transition_dag_run(
                session, run.id, expected="running", to=target, at=NOW, end_date=NOW
            )


def ti_rows(store, run_id: str, dag_id="pipeline") -> dict[str, TaskInstance]:
    with store.session(readonly=True) as session:
        return {ti.task_id: ti for ti in runs.get_task_instances(session, dag_id, run_id)}


def states_of(store, run_id: str) -> dict[str, str]:
    return {task_id: ti.state for task_id, ti in ti_rows(store, run_id).items()}


def audit(store) -> list[tuple[str, str, str | None]]:
    with store.session(readonly=True) as session:
        rows = session.scalars(select(AuditLog).order_by(AuditLog.id))
        return [(row.actor, row.event, row.run_id) for row in rows]


def count_runs(store) -> int:
    with store.session(readonly=True) as session:
        return len(session.scalars(select(DagRun.id)).all())


# -- trigger ------------------------------------------------------------------------------


def test_trigger_queues_a_manual_run_with_conf_interval_and_audit_row(dags_stored):
    store = dags_stored
    when = datetime(2026, 4, 1, 6, 30, tzinfo=UTC)
    run = api.trigger_dag(
        store, "pipeline", conf={"n": 5}, logical_date=when, actor="alice", now=NOW
    )

    assert run.run_id == "manual__2026-04-01T06:30:00+00:00"
    assert (run.state, run.run_type, run.conf) == ("queued", "manual", {"n": 5})
    with store.session(readonly=True) as session:
        row = runs.get_dag_run(session, "pipeline", run.run_id)
        assert row.logical_date == when
        assert (row.data_interval_start, row.data_interval_end) == (when, when)
        assert row.queued_at == NOW and row.start_date is None and row.external_trigger
    assert set(states_of(store, run.run_id).values()) == {"none"}
    assert audit(store) == [("alice", "dags.trigger", run.run_id)]


def test_trigger_defaults_logical_date_to_now_and_works_on_a_paused_dag(dags_stored):
    store = dags_stored
    with store.session(readonly=True) as session:
        assert session.get(Dag, "pipeline").is_paused  # paused at creation by default
    run = api.trigger_dag(store, "pipeline", now=NOW)
    assert run.logical_date == NOW and run.run_id == f"manual__{NOW.isoformat()}"
    assert api.dag_run_state(store, "pipeline", run.run_id) is DagRunState.QUEUED


def test_a_bad_conf_is_refused_before_anything_is_written(dags_stored):
    with pytest.raises(ParamValidationError, match="'n'"):
        api.trigger_dag(dags_stored, "pipeline", conf={"n": "five"}, now=NOW)
    assert count_runs(dags_stored) == 0
    assert audit(dags_stored) == []


def test_a_duplicate_run_id_or_logical_date_is_refused(dags_stored):
    store = dags_stored
    api.trigger_dag(store, "pipeline", run_id="mine", logical_date=NOW, now=NOW)
    with pytest.raises(DagwatchError, match="already has a run 'mine'"):
        api.trigger_dag(store, "pipeline", run_id="mine", logical_date=NOW + timedelta(1))
    with pytest.raises(DagwatchError, match="already has a run at 2026-04-10T12:00:00"):
        api.trigger_dag(store, "pipeline", run_id="other", logical_date=NOW)
    assert count_runs(store) == 1


def test_trigger_of_an_unknown_or_inactive_dag_is_not_found(dags_stored):
    with pytest.raises(NotFound, match="'nope'"):
        api.trigger_dag(dags_stored, "nope", now=NOW)
    with dags_stored.session() as session:
        session.execute(update(Dag).where(Dag.dag_id == "pipeline").values(is_active=False))
    with pytest.raises(NotFound, match="'pipeline'"):
        api.trigger_dag(dags_stored, "pipeline", now=NOW)


# -- pause --------------------------------------------------------------------------------


def test_pause_and_unpause_report_changes_and_unpause_forgets_the_next_run(dags_stored):
    store = dags_stored
    planned = datetime(2026, 4, 1, tzinfo=UTC)
    with store.session() as session:
        session.get(Dag, "pipeline").next_dagrun_create_after = planned

    assert api.set_paused(store, "pipeline", True, actor="bob") is False  # already paused
    with store.session(readonly=True) as session:
        assert session.get(Dag, "pipeline").next_dagrun_create_after == planned
    assert api.set_paused(store, "pipeline", False, actor="bob") is True
    with store.session(readonly=True) as session:
        dag = session.get(Dag, "pipeline")
        assert not dag.is_paused and dag.next_dagrun_create_after is None
    assert api.set_paused(store, "pipeline", True, actor="bob") is True
    assert [event for _, event, _ in audit(store)] == ["dags.pause", "dags.unpause", "dags.pause"]
    with pytest.raises(NotFound):
        api.set_paused(store, "nope", True)


# -- backfill -----------------------------------------------------------------------------


def local_midnights(first: str, days: int) -> list[datetime]:
    day = pendulum.parse(first, tz=AMS)
    return [day.add(days=i).in_timezone("UTC") for i in range(days)]


def test_backfill_daily_in_a_timezone_queues_one_run_per_local_day_across_dst(dags_stored):
    store = dags_stored
    # Naive bounds are wall-clock dates in the DAG's timezone; DST starts on 2026-03-29.
    queued = api.backfill(
        store, "pipeline", start=datetime(2026, 3, 26), end=datetime(2026, 4, 1), now=NOW
    )

    expected = local_midnights("2026-03-26", 7)
    assert [run.logical_date for run in queued] == expected
    assert expected[3] == datetime(2026, 3, 28, 23, tzinfo=UTC)  # 29th, still CET
    assert expected[4] == datetime(2026, 3, 29, 22, tzinfo=UTC)  # 30th, CEST
    with store.session(readonly=True) as session:
        rows = runs.list_dag_runs(session, dag_id="pipeline")
    assert sorted(row.logical_date for row in rows) == expected
    by_date = {row.logical_date: row for row in rows}
    for start, end in zip(
        expected, [*expected[1:], *local_midnights("2026-04-02", 1)], strict=True
    ):
        row = by_date[start]
        assert (row.data_interval_start, row.data_interval_end) == (start, end)
        assert (row.state, row.run_type) == ("queued", "backfill")
        assert row.run_id == f"backfill__{start.isoformat()}"
    assert by_date[expected[3]].data_interval_end - expected[3] == timedelta(hours=23)
    assert audit(store) == [("cli", "dags.backfill", None)]


def test_backfill_with_aware_bounds_and_end_inclusive(dags_stored):
    start = datetime(2026, 3, 1, tzinfo=UTC)  # local 01:00: the first run is the next midnight
    end = local_midnights("2026-03-04", 1)[0]
    queued = api.backfill(dags_stored, "pipeline", start=start, end=end, now=NOW)
    assert [run.logical_date for run in queued] == local_midnights("2026-03-02", 3)


def test_backfill_skips_dates_that_have_a_run_and_reruns_failed_ones_on_request(dags_stored):
    store = dags_stored
    days = local_midnights("2026-03-02", 4)
    manual = api.trigger_dag(store, "pipeline", logical_date=days[1], now=NOW)
    first = api.backfill(store, "pipeline", start=datetime(2026, 3, 2), end=datetime(2026, 3, 5))
    assert [run.logical_date for run in first] == [days[0], days[2], days[3]]
    assert api.backfill(store, "pipeline", start=days[0], end=days[3]) == []

    failed = first[0].run_id
    set_task_states(store, failed, {"extract": "success", "transform": "failed"})
    set_task_states(store, failed, {"load": "upstream_failed", "report": "upstream_failed"})
    set_run_state(store, failed, DagRunState.FAILED)
    set_task_states(store, manual.run_id, {"extract": "failed"})
    set_run_state(store, manual.run_id, DagRunState.FAILED)
    set_run_state(store, first[1].run_id, DagRunState.SUCCESS)

    assert api.backfill(store, "pipeline", start=days[0], end=days[3]) == []
    dry = api.backfill(
        store, "pipeline", start=days[0], end=days[3], rerun_failed=True, dry_run=True
    )
    assert [run.run_id for run in dry] == [failed, manual.run_id]
    assert api.dag_run_state(store, "pipeline", failed) is DagRunState.FAILED

    rerun = api.backfill(store, "pipeline", start=days[0], end=days[3], rerun_failed=True)
    assert [(run.run_id, run.state) for run in rerun] == [
        (failed, "queued"),
        (manual.run_id, "queued"),
    ]
    assert set(states_of(store, failed).values()) == {"none"}
    with store.session(readonly=True) as session:
        row = runs.get_dag_run(session, "pipeline", failed)
        assert row.end_date is None and row.start_date is None
    assert api.dag_run_state(store, "pipeline", first[1].run_id) is DagRunState.SUCCESS


def test_backfill_refusals(dags_stored):
    store = dags_stored
    with pytest.raises(DagwatchError, match="has no schedule"):
        api.backfill(store, "manual_only", start=datetime(2026, 3, 1), end=datetime(2026, 3, 2))
    with pytest.raises(DagwatchError, match="is after its end"):
        api.backfill(store, "pipeline", start=datetime(2026, 3, 5), end=datetime(2026, 3, 1))
    with pytest.raises(ParamValidationError):
        api.backfill(
            store, "pipeline", start=datetime(2026, 3, 1), end=datetime(2026, 3, 2), conf={"n": []}
        )
    with pytest.raises(NotFound):
        api.backfill(store, "nope", start=datetime(2026, 3, 1), end=datetime(2026, 3, 2))
    planned = api.backfill(
        store, "pipeline", start=datetime(2026, 3, 1), end=datetime(2026, 3, 10), dry_run=True
    )
    assert len(planned) == 10
    assert count_runs(store) == 0 and audit(store) == []


# -- clear --------------------------------------------------------------------------------


@pytest.fixture
def finished_run(dags_stored):
    """A failed run: extract ok, transform failed after 3 tries, its downstream upstream_failed,
    `other` still running; every task pushed an XCom."""
    store = dags_stored
    run = api.trigger_dag(store, "pipeline", logical_date=NOW - timedelta(days=1), now=NOW)
    set_task_states(store, run.run_id, {"extract": "success", "other": "running"})
    set_task_states(store, run.run_id, {"transform": "failed"})
    with store.session() as session:
        session.execute(update(TaskInstance).values(try_number=3))  # as if after 2 retries
        for task_id in ("extract", "transform", "load", "report", "other"):
            runs.set_xcom(
                session,
                dag_id="pipeline",
                run_id=run.run_id,
                task_id=task_id,
                key="return_value",
                value=task_id,
                now=NOW,
            )
    set_task_states(store, run.run_id, {"load": "upstream_failed", "report": "upstream_failed"})
    set_run_state(store, run.run_id, DagRunState.FAILED)
    return run.run_id


def xcom_tasks(store, run_id: str) -> set[str]:
    with store.session(readonly=True) as session:
        return set(session.scalars(select(XCom.task_id).where(XCom.run_id == run_id)))


def test_clear_by_regex_only_touches_the_matching_tasks(dags_stored, finished_run):
    result = api.clear_task_instances(dags_stored, "pipeline", task_regex="^trans", now=NOW)
    assert [(ref.task_id, ref.state) for ref in result.cleared] == [("transform", "failed")]
    assert result.left_running == [] and result.requeued_runs == [finished_run]
    states = states_of(dags_stored, finished_run)
    assert states == {
        "extract": "success",
        "transform": "none",
        "load": "upstream_failed",
        "report": "upstream_failed",
        "other": "running",
    }
    assert xcom_tasks(dags_stored, finished_run) == {"extract", "load", "report", "other"}


def test_clear_downstream_takes_the_closure_and_resets_retries_run_and_xcoms(
    dags_stored, finished_run
):
    store = dags_stored
    result = api.clear_task_instances(
        store, "pipeline", task_regex="transform", downstream=True, actor="carol", now=NOW
    )

    assert {ref.task_id for ref in result.cleared} == {"transform", "load", "report"}
    assert xcom_tasks(store, finished_run) == {"extract", "other"}
    tis = ti_rows(store, finished_run)
    assert tis["transform"].max_tries == 3 + 2  # try_number + retries: its retries again
    assert tis["load"].max_tries == 3 + 0
    assert tis["transform"].next_retry_at is None
    with store.session(readonly=True) as session:
        run = runs.get_dag_run(session, "pipeline", finished_run)
        assert (run.state, run.end_date, run.start_date, run.queued_at) == (
            "queued",
            None,
            None,
            NOW,
        )
        events = session.scalars(
            select(StateTransition).where(StateTransition.reason == "cleared by carol")
        ).all()
    assert sorted((e.entity, e.task_id, e.from_state, e.to_state) for e in events) == [
        ("dag_run", None, "failed", "queued"),
        ("task_instance", "load", "upstream_failed", "none"),
        ("task_instance", "report", "upstream_failed", "none"),
        ("task_instance", "transform", "failed", "none"),
    ]
    assert audit(store)[-1] == ("carol", "tasks.clear", None)


def test_clear_leaves_running_and_queued_task_instances_alone(dags_stored, finished_run):
    result = api.clear_task_instances(dags_stored, "pipeline", run_id=finished_run, now=NOW)
    assert {ref.task_id for ref in result.cleared} == {"extract", "transform", "load", "report"}
    assert [(ref.task_id, ref.state) for ref in result.left_running] == [("other", "running")]
    assert "executing" in result.left_running[0].reason
    assert states_of(dags_stored, finished_run)["other"] == "running"
    assert xcom_tasks(dags_stored, finished_run) == {"other"}


def test_clear_only_failed_keeps_successes(dags_stored, finished_run):
    result = api.clear_task_instances(dags_stored, "pipeline", only_failed=True, now=NOW)
    assert {ref.task_id for ref in result.cleared} == {"transform", "load", "report"}
    assert result.left_running == []  # `other` is running, not failed: not selected at all
    assert states_of(dags_stored, finished_run)["extract"] == "success"


def test_clear_dry_run_reports_without_writing(dags_stored, finished_run):
    before = audit(dags_stored)
    result = api.clear_task_instances(dags_stored, "pipeline", dry_run=True, now=NOW)
    assert result.dry_run and len(result.cleared) == 4 and result.requeued_runs == [finished_run]
    assert states_of(dags_stored, finished_run)["transform"] == "failed"
    assert api.dag_run_state(dags_stored, "pipeline", finished_run) is DagRunState.FAILED
    assert len(xcom_tasks(dags_stored, finished_run)) == 5
    assert audit(dags_stored) == before


def test_clear_of_a_running_run_keeps_it_running(dags_stored):
    store = dags_stored
    run = api.trigger_dag(store, "pipeline", now=NOW)
    set_run_state(store, run.run_id, DagRunState.RUNNING)
    set_task_states(store, run.run_id, {"extract": "failed", "transform": "queued"})
    result = api.clear_task_instances(store, "pipeline", now=NOW)
    assert [ref.task_id for ref in result.cleared] == ["extract"]
    assert [ref.task_id for ref in result.left_running] == ["transform"]
    assert result.requeued_runs == []
    assert api.dag_run_state(store, "pipeline", run.run_id) is DagRunState.RUNNING


def test_clear_refusals(dags_stored, finished_run):
    with pytest.raises(DagwatchError, match="not valid"):
        api.clear_task_instances(dags_stored, "pipeline", task_regex="(")
    with pytest.raises(NotFound, match="matches 'zzz'"):
        api.clear_task_instances(dags_stored, "pipeline", task_regex="zzz")
    with pytest.raises(NotFound, match="'nope'"):
        api.clear_task_instances(dags_stored, "pipeline", run_id="nope")
    with pytest.raises(NotFound):
        api.clear_task_instances(dags_stored, "nope")


# -- reads --------------------------------------------------------------------------------


def test_list_runs_state_and_task_states(dags_stored, finished_run):
    store = dags_stored
    other = api.trigger_dag(store, "manual_only", logical_date=NOW, now=NOW)

    assert [run.run_id for run in api.list_runs(store)] == [other.run_id, finished_run]
    assert [run.run_id for run in api.list_runs(store, dag_id="pipeline")] == [finished_run]
    assert [run.run_id for run in api.list_runs(store, state="queued")] == [other.run_id]
    assert [r.run_id for r in api.list_runs(store, state=DagRunState.FAILED)] == [finished_run]
    assert len(api.list_runs(store, limit=1)) == 1
    with pytest.raises(NotFound):
        api.list_runs(store, dag_id="nope")

    assert api.dag_run_state(store, "pipeline", finished_run) is DagRunState.FAILED
    with pytest.raises(NotFound, match="'nope'"):
        api.dag_run_state(store, "pipeline", "nope")

    rows = api.task_states(store, "pipeline", finished_run)
    assert [row["task_id"] for row in rows] == ["extract", "transform", "load", "report", "other"]
    assert {
        "task_id",
        "state",
        "try_number",
        "start_date",
        "end_date",
        "duration",
        "pool",
        "queue",
        "priority_weight",
        "hostname",
    } <= set(rows[0])
    assert rows[1]["state"] == "failed" and rows[1]["try_number"] == 3
    with pytest.raises(NotFound):
        api.task_states(store, "pipeline", "nope")
