"""The run verbs (trigger, pause, backfill, list-runs, state, states-for-dag-run, clear)
through a real subprocess, as a user runs them."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from datetime import UTC, datetime

import pytest

from engine.states import DagRunState, TaskState
from engine.store import runs, transitions
from engine.store.db import Store
from tests.helpers import run_cli

DAGS = """
import pendulum
from engine import DAG, EmptyOperator, Param

with DAG(
    "pipeline",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Amsterdam"),
    params={"n": Param(1, type="integer")},
):
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")

with DAG("hourly", schedule="@hourly", start_date=pendulum.datetime(2026, 1, 1)):
    EmptyOperator(task_id="tick")

with DAG("clearme", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
    first, second = EmptyOperator(task_id="first"), EmptyOperator(task_id="second")
    first >> second >> EmptyOperator(task_id="third")
    EmptyOperator(task_id="busy")
"""
AT = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One migrated home with three DAGs parsed (no examples)."""
    home = tmp_path_factory.mktemp("home")
    (home / "dags").mkdir()
    (home / "dags" / "runs_dags.py").write_text(textwrap.dedent(DAGS))
    env = {
        "DAGWATCH_HOME": str(home),
        "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        "PATH": "/usr/bin:/bin",
        "USER": "dagwatch-test",
    }
    ok("db", "migrate", env=env)
    ok("dags", "reserialize", env=env)
    return env


def ok(*args: str, env: dict[str, str], input: str | None = None) -> str:
    result = run_cli(*args, env=env, input=input)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def fails(*args: str, env: dict[str, str], code: int, input: str | None = None) -> str:
    """A failure is one line on stderr, no traceback, and the expected exit code."""
    result = run_cli(*args, env=env, input=input)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (args, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def db(env) -> sqlite3.Connection:
    return sqlite3.connect(f"{env['DAGWATCH_HOME']}/dagwatch.db")


def audit_events(env) -> list[tuple[str, str]]:
    with db(env) as connection:
        return connection.execute("SELECT actor, event FROM audit_log ORDER BY id").fetchall()


def run_count(env, dag_id: str) -> int:
    with db(env) as connection:
        query = "SELECT count(*) FROM dag_run WHERE dag_id = ?"
        return connection.execute(query, (dag_id,)).fetchone()[0]


def test_trigger_prints_the_run_id_and_queues_the_run(env):
    out = ok("dags", "trigger", "pipeline", "--logical-date", "2026-02-01", env=env)
    assert out == "manual__2026-02-01T00:00:00+00:00\n"

    args = ("dags", "trigger", "pipeline", "--run-id", "by_hand", "--conf", '{"n": 3}')
    result = run_cli(*args, "--logical-date", "2026-02-02T10:30", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "dag_id": "pipeline",
        "run_id": "by_hand",
        "logical_date": "2026-02-02T10:30:00+00:00",
        "state": "queued",
    }
    assert "is paused" in result.stderr  # new DAGs start paused: the run waits
    assert ok("dags", "state", "pipeline", "by_hand", env=env) == "queued\n"
    assert ("dagwatch-test", "dags.trigger") in audit_events(env)


@pytest.fixture(scope="module")
def taken_date(env) -> None:
    ok("dags", "trigger", "pipeline", "--logical-date", "2026-02-15", env=env)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--conf", '{"n": "x"}'], 1, "param 'n'"),
        (["--logical-date", "2026-02-15"], 1, "already has a run at"),
        (["--conf", "{bad"], 2, "not valid JSON"),
        (["--logical-date", "someday"], 2, "ISO 8601"),
        (["--run-id", " "], 2, "must not be empty"),
    ],
)
def test_trigger_refusals(env, taken_date, args, code, message):
    before = run_count(env, "pipeline")
    assert message in fails("dags", "trigger", "pipeline", *args, env=env, code=code)
    assert run_count(env, "pipeline") == before


def test_unknown_dag_or_run_is_one_line_and_exit_1(env):
    assert "'nope'" in fails("dags", "trigger", "nope", env=env, code=1)
    assert "'nope'" in fails("dags", "pause", "nope", env=env, code=1)
    assert "'nope'" in fails("dags", "state", "pipeline", "nope", env=env, code=1)
    assert "'nope'" in fails("dags", "list-runs", "nope", env=env, code=1)
    assert "'nope'" in fails("tasks", "states-for-dag-run", "pipeline", "nope", env=env, code=1)
    assert "'nope'" in fails("tasks", "clear", "nope", "--yes", env=env, code=1)
    assert "'nope'" in fails("tasks", "clear", "clearme", "--run-id", "nope", env=env, code=1)


def test_pause_and_unpause(env):
    assert ok("dags", "unpause", "pipeline", env=env) == "DAG pipeline unpaused\n"
    listing = json.loads(ok("dags", "list", "-o", "json", env=env))
    assert next(row for row in listing if row["dag_id"] == "pipeline")["is_paused"] is False
    assert ok("dags", "pause", "pipeline", env=env) == "DAG pipeline paused\n"
    events = [event for _, event in audit_events(env)]
    assert events[-2:] == ["dags.unpause", "dags.pause"]


def test_list_runs_and_state_json_keys(env):
    ok("dags", "trigger", "clearme", "--run-id", "listed", env=env)
    rows = json.loads(
        ok("dags", "list-runs", "clearme", "--state", "queued", "-o", "json", env=env)
    )
    assert set(rows[0]) == {
        "dag_id",
        "run_id",
        "run_type",
        "state",
        "logical_date",
        "start_date",
        "end_date",
    }
    assert {(row["run_id"], row["run_type"]) for row in rows} >= {("listed", "manual")}
    assert len(json.loads(ok("dags", "list-runs", "--limit", "1", "-o", "json", env=env))) == 1
    assert "listed" in ok("dags", "list-runs", "clearme", env=env)
    state = json.loads(ok("dags", "state", "clearme", "listed", "--output", "json", env=env))
    assert state == {"dag_id": "clearme", "run_id": "listed", "state": "queued"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dags", "list-runs", "--state", "done"], "'done' is not one of"),
        (["dags", "list-runs", "--limit", "0"], "0 is not an integer from 1 to 2147483647"),
        (["dags", "state", "pipeline"], "Missing argument"),
        (["dags", "backfill", "pipeline", "--start", "2026-03-05", "--end", "2026-03-01"], "after"),
        (["dags", "backfill", "pipeline", "--start", "2026-03-05"], "Missing option"),
        (["dags", "backfill", "pipeline", "-s", "x", "-e", "2026-03-01"], "ISO 8601"),
        (["tasks", "clear", "clearme", "--task-regex", "("], "not a valid regex"),
        (["tasks", "states-for-dag-run", "clearme", "r", "-o", "yaml"], "'yaml' is not one of"),
    ],
)
def test_bad_usage_exits_2_with_one_line_and_writes_nothing(env, args, message):
    before = audit_events(env)
    assert message in fails(*args, env=env, code=2)
    assert audit_events(env) == before


def test_backfill_queues_runs_in_the_dag_timezone(env):
    out = ok("dags", "backfill", "pipeline", "-s", "2026-01-05", "-e", "2026-01-07", env=env)
    assert "queued 3 run(s) of pipeline" in out
    # Local midnights in Amsterdam (UTC+1 in winter).
    for day in ("04", "05", "06"):
        assert f"backfill__2026-01-{day}T23:00:00+00:00" in out
    wider = ("dags", "backfill", "pipeline", "-s", "2026-01-05", "-e", "2026-01-08")
    rows = json.loads(ok(*wider, "-o", "json", env=env))
    assert [row["run_id"] for row in rows] == ["backfill__2026-01-07T23:00:00+00:00"]
    assert set(rows[0]) == {"dag_id", "run_id", "logical_date", "data_interval_end", "state"}
    assert "nothing to backfill" in ok(*wider, env=env)
    assert "has no schedule" in fails(
        "dags", "backfill", "clearme", "-s", "2026-01-05", "-e", "2026-01-08", env=env, code=1
    )


def test_a_large_backfill_asks_first(env):
    args = ("dags", "backfill", "hourly", "-s", "2026-01-01", "-e", "2026-01-03T23:00")
    assert "not confirmed" in fails(*args, env=env, code=1)  # 72 runs, stdin closed
    assert "not confirmed" in fails(*args, env=env, code=1, input="n\n")
    assert run_count(env, "hourly") == 0
    out = ok(*args, env=env, input="y\n")
    assert "Queue 72 runs of hourly?" in out and "queued 72 run(s)" in out
    assert run_count(env, "hourly") == 72
    ok("dags", "backfill", "hourly", "-s", "2026-01-04", "-e", "2026-01-06", "--yes", env=env)
    assert run_count(env, "hourly") == 72 + 49


def walk(session, ti_id: int, path: list[str]) -> None:
    current = "none"
    for step in path:
        extra = {"try_number": 1} if step == "running" else {}
        transitions.transition_task_instance(
            session, ti_id, expected=current, to=step, at=AT, **extra
        )
        current = step


@pytest.fixture
def failed_run(env):
    """A failed run of `clearme`: first ok, second failed, third upstream_failed, busy running."""
    run_id = f"clear_{run_count(env, 'clearme')}"
    ok("dags", "trigger", "clearme", "--run-id", run_id, env=env)
    store = Store(f"sqlite:///{env['DAGWATCH_HOME']}/dagwatch.db")
    try:
        with store.session() as session:
            tis = {ti.task_id: ti.id for ti in runs.get_task_instances(session, "clearme", run_id)}
            ran = ["scheduled", "queued", "running"]
            walk(session, tis["first"], [*ran, "success"])
            walk(session, tis["second"], [*ran, "failed"])
            walk(session, tis["third"], ["upstream_failed"])
            walk(session, tis["busy"], ran)
            run = runs.get_dag_run(session, "clearme", run_id)
            transitions.transition_dag_run(
                session, run.id, expected=DagRunState.QUEUED, to=DagRunState.RUNNING, at=AT
            )
            transitions.transition_dag_run(
                session, run.id, expected=DagRunState.RUNNING, to=DagRunState.FAILED, at=AT
            )
    finally:
        store.dispose()
    return run_id


def test_states_for_dag_run(env, failed_run):
    rows = json.loads(
        ok("tasks", "states-for-dag-run", "clearme", failed_run, "-o", "json", env=env)
    )
    assert set(rows[0]) == {
        "dag_id",
        "run_id",
        "task_id",
        "state",
        "try_number",
        "start_date",
        "end_date",
        "duration",
        "hostname",
    }
    assert {row["task_id"]: row["state"] for row in rows} == {
        "first": TaskState.SUCCESS,
        "second": TaskState.FAILED,
        "third": TaskState.UPSTREAM_FAILED,
        "busy": TaskState.RUNNING,
    }
    assert "upstream_failed" in ok("tasks", "states-for-dag-run", "clearme", failed_run, env=env)


def task_states(env, run_id: str) -> dict[str, str]:
    with db(env) as connection:
        query = "SELECT task_id, state FROM task_instance WHERE run_id = ?"
        return dict(connection.execute(query, (run_id,)).fetchall())


def test_clear_asks_first_and_refuses_without_an_answer(env, failed_run):
    args = ("tasks", "clear", "clearme", "--run-id", failed_run, "-t", "^second$", "-d")
    line = fails(*args, env=env, code=1)
    assert "not confirmed" in line and "--yes" in line
    assert task_states(env, failed_run)["second"] == "failed"

    out = ok(*args, env=env, input="y\n")
    assert "will clear 2 task instance(s)" in out and "Clear these 2" in out
    assert "cleared 2 task instance(s) of clearme" in out
    assert f"queued again: {failed_run}" in out
    assert task_states(env, failed_run) == {
        "first": "success",
        "second": "none",
        "third": "none",
        "busy": "running",
    }
    assert audit_events(env)[-1] == ("dagwatch-test", "tasks.clear")


def test_clear_yes_lists_what_was_left_running(env, failed_run):
    out = ok("tasks", "clear", "clearme", "--run-id", failed_run, "--yes", env=env)
    assert "cleared 3 task instance(s)" in out
    assert "left 1 alone (queued or running):" in out
    left = out.split("left 1 alone")[1]
    assert "busy" in left and "running" in left and "executing" in left
    assert task_states(env, failed_run)["busy"] == "running"

    again = ok("tasks", "clear", "clearme", "--run-id", failed_run, "--only-failed", env=env)
    assert "nothing to clear in clearme" in again  # nothing asked: nothing to confirm


def test_failed_deps_says_why_a_task_waits(env):
    ok("dags", "trigger", "clearme", "--run-id", "why_run", env=env)
    assert ok("tasks", "failed-deps", "clearme", "why_run", "first", env=env) == (
        "DAG 'clearme' is paused\n"
    )
    ok("dags", "unpause", "clearme", env=env)
    try:
        result = run_cli(
            "tasks", "failed-deps", "clearme", "why_run", "second", "-o", "json", env=env
        )
    finally:
        ok("dags", "pause", "clearme", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "dag_id": "clearme",
        "run_id": "why_run",
        "task_id": "second",
        "reason": "the run is queued: the scheduler starts it on its next tick",
    }
    fails("tasks", "failed-deps", "clearme", "why_run", "nope", env=env, code=1)


def _ti_states(env, run_id: str) -> dict[str, str]:
    with db(env) as connection:
        query = "SELECT task_id, state FROM task_instance WHERE run_id = ? ORDER BY task_id"
        return dict(connection.execute(query, (run_id,)).fetchall())


def _run_state(env, run_id: str) -> str:
    with db(env) as connection:
        query = "SELECT state FROM dag_run WHERE run_id = ?"
        return connection.execute(query, (run_id,)).fetchone()[0]


def test_mark_run_shows_the_change_asks_then_marks_and_audits(env):
    ok("dags", "trigger", "clearme", "--run-id", "to_mark", env=env)
    with db(env) as connection:  # as if the scheduler had run some of them
        for task_id, state in (("first", "success"), ("second", "failed"), ("busy", "running")):
            connection.execute(
                "UPDATE task_instance SET state = ?, try_number = 1 "
                "WHERE run_id = 'to_mark' AND task_id = ?",
                (state, task_id),
            )
    before = _ti_states(env, "to_mark")

    refused = run_cli("dags", "mark-run", "clearme", "to_mark", "--state", "success", env=env)
    assert refused.returncode == 1, refused.stderr
    assert "will mark run to_mark of clearme success (now queued)" in refused.stdout
    assert "2 task instance(s): 1 failed -> success, 1 none -> success" in refused.stdout
    assert "second" in refused.stdout and "third" in refused.stdout
    assert "leave 1 alone (queued or running)" in refused.stdout
    assert "not confirmed" in refused.stderr and "--yes" in refused.stderr
    assert _ti_states(env, "to_mark") == before and _run_state(env, "to_mark") == "queued"

    out = ok("dags", "mark-run", "clearme", "to_mark", "--state", "success", env=env, input="y\n")
    assert "marked run to_mark of clearme success (was queued)" in out
    assert _run_state(env, "to_mark") == "success"
    assert _ti_states(env, "to_mark") == {
        "busy": "running",
        "first": "success",
        "second": "success",
        "third": "success",
    }
    assert ("dagwatch-test", "dags.mark_success") in audit_events(env)

    result = json.loads(
        ok("dags", "mark-run", "clearme", "to_mark", "--state", "failed", "--yes", "-o", "json",
           env=env)
    )  # fmt: skip
    assert result == {
        "dag_id": "clearme",
        "run_id": "to_mark",
        "state": "failed",
        "previous_state": "success",
        "task_instances_moved": 1,
        "left_running": 0,
    }
    assert _ti_states(env, "to_mark")["busy"] == "failed"
    assert ("dagwatch-test", "dags.mark_failed") in audit_events(env)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["clearme", "nope", "--state", "success", "--yes"], 1, "'nope'"),
        (["nope", "x", "--state", "failed", "--yes"], 1, "'nope'"),
        (["clearme", "x", "--state", "running", "--yes"], 2, "'running' is not one of"),
        (["clearme", "x", "--yes"], 2, "--state"),
    ],
)
def test_mark_run_refusals(env, args, code, message):
    assert message in fails("dags", "mark-run", *args, env=env, code=code)
