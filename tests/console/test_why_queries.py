"""Why isn't it running?, failures by signature and parsing: the query functions on a
seeded metastore (SQLite and PostgreSQL), without Streamlit, with exact answers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from console.queries import explain, failures, parsing
from engine.scheduling.explain import Why
from engine.states import TaskState
from engine.store import runs
from engine.store.error_signature import signature
from engine.store.models import TaskInstance, TaskTry
from tests.console.seed_why import MISSING, seed_why


@pytest.fixture
def why(seeded, config):
    return seed_why(seeded, config)


def test_a_run_blocked_by_max_active_runs_names_the_run_in_the_way(why, config):
    found = explain.run(why.store, "limited", "l2_queued", config=config, now=why.now)
    assert found.kind is Why.RUN_LIMIT
    assert found.reason == ("run limit: the run is queued, DAG 'limited' is at max_active_runs (1)")
    assert found.details == ("running now (1 of 1): l1_running",)
    table = explain.runs_in_the_way(found)
    assert list(table.run_id) == ["l1_running"]
    assert list(table.running_s) == [1800.0]
    assert found.scheduler is None  # the seeded scheduler beat 3 s ago


def test_the_dag_page_answer_for_a_dag_whose_next_run_waits(why, config):
    found = explain.dag(why.store, "limited", config=config, now=why.now)
    assert found.kind is Why.RUN_LIMIT and found.subject == "DAG"
    assert found.reason.startswith("run l2_queued is queued: run limit:")
    assert [r.run_id for r in found.runs] == ["l1_running"]
    reports = explain.dag(why.store, "reports", config=config, now=why.now)
    assert reports.kind is Why.NO_SCHEDULE
    assert reports.reason == "schedule None: it runs only when triggered"


def test_a_full_pool_names_its_holders_longest_first_with_how_long(why, config):
    found = explain.task(why.store, "limited", "l1_running", "backup", config=config, now=why.now)
    assert found.kind is Why.POOL_FULL
    assert found.reason == "pool 'db' is full: it needs 1 open slot(s)"
    assert found.details[0] == (
        "pool 'db' has 2 slot(s): 2 held by queued and running task instances, 0 open; "
        "this one needs 1"
    )
    holders = explain.holders(found)
    assert holders[["dag_id", "run_id", "task_id", "state", "pool_slots"]].values.tolist() == [
        ["limited", "l1_running", "load", "running", 1],
        ["reports", "r5_db", "render", "running", 1],
    ]
    assert list(holders.held_s) == [1200.0, 360.0]
    assert list(holders.hostname) == ["worker-1", "worker-2"]


def test_a_running_run_lists_its_waiting_task_instances_and_why(why, config):
    found = explain.run(why.store, "limited", "l1_running", config=config, now=why.now)
    assert found.kind is Why.RUNNING
    assert found.reason == "running: 1 task instance(s) running, 0 queued"
    table = explain.waiting(found).set_index("task_id")
    assert table.loc["backup", "kind"] == Why.POOL_FULL
    assert table.loc["publish", "kind"] == Why.UPSTREAM
    assert table.loc["publish", "reason"] == (
        "trigger rule all_success is not met yet: waiting for upstream load"
    )


def test_a_retry_says_when_it_is_due(why, config):
    found = explain.task(why.store, "limited", "l1_running", "flaky", config=config, now=why.now)
    assert found.kind is Why.RETRY
    assert found.due == why.now + timedelta(minutes=4)
    assert found.reason == f"retry not due until {found.due.isoformat()}"
    assert found.details == ("due in 4 min",)
    run = explain.waiting(
        explain.run(why.store, "limited", "l1_running", config=config, now=why.now)
    )
    assert sorted(run.task_id) == ["backup", "flaky", "publish"]


def test_upstream_states_are_named(why, config):
    found = explain.task(why.store, "limited", "l1_running", "publish", config=config, now=why.now)
    assert found.kind is Why.UPSTREAM
    assert explain.upstream(found).values.tolist() == [["load", "running"]]


def test_a_silent_scheduler_is_said_first(why, config):
    later = why.now + timedelta(minutes=5)
    found = explain.run(why.store, "limited", "l2_queued", config=config, now=later)
    assert found.scheduler == (
        "the scheduler is not heartbeating: its last heartbeat is 303 s old "
        "(scheduler.heartbeat_timeout 60 s), so nothing moves until it is back"
    )
    done = explain.run(why.store, "pipeline", "r1_ok", config=config, now=later)
    assert done.kind is Why.FINISHED and done.scheduler is None


def test_three_failures_sharing_one_signature_are_one_row(why):
    table = failures.by_signature(why.store, "24 h", now=why.now)
    top = table.iloc[0]
    assert top.failures == 3
    assert top.signature == ("FileNotFoundError: [Errno <n>] No such file or directory: '<str>'")
    assert (top.dag_count, top.task_count) == (2, 2)
    assert (top.dags, top.tasks) == ("limited, pipeline", "limited.load, pipeline.extract")
    assert top.first_seen == why.now - timedelta(hours=4)
    assert top.last_seen == why.now - timedelta(minutes=50)
    # the newest try is the example, with its log
    assert (top.example_run_id, top.example_task_id, top.example_try_number) == (
        "l0_failed",
        "load",
        3,
    )
    assert top.example_error == MISSING.format(day="2026-04-10")
    assert top.example_log_path == "/logs/limited/l0_failed/load/3.log"
    assert sorted(table.failures) == [1, 1, 3]
    assert failures.summary(why.store, "24 h", now=why.now) == {
        "failures": 5,
        "signatures": 3,
        "dags": 2,
    }


def test_the_window_bounds_the_groups(why):
    assert list(failures.by_signature(why.store, "1 h", now=why.now).failures) == [1]
    week = failures.by_signature(why.store, "7 d", now=why.now)
    assert week.iloc[0].failures == 4
    assert week.iloc[0].first_seen == why.now - timedelta(days=3)
    with pytest.raises(ValueError, match="window '2 h' is not one of 1 h, 24 h, 7 d"):
        failures.by_signature(why.store, "2 h", now=why.now)


def test_the_signature_is_written_with_the_error(why):
    store = why.store
    with store.session() as session:
        ti = session.execute(
            select(TaskInstance).where(
                TaskInstance.run_id == "l1_running", TaskInstance.task_id == "load"
            )
        ).scalar_one()
        runs.start_try(session, ti, hostname="h", pid=1, log_path="/l", now=why.now)
        runs.finish_try(
            session,
            ti.id,
            ti.try_number,
            state=TaskState.FAILED,
            end_date=why.now,
            duration=1.0,
            error="ValueError: batch 17 of 2026-04-10 is empty",
        )
    with store.session(readonly=True) as session:
        written = session.execute(
            select(TaskTry.error_signature).where(TaskTry.ti_id == ti.id)
        ).scalar_one()
    assert written == signature("ValueError: batch 3 of 2026-01-01 is empty")


def test_parse_times_slowest_first_and_files_not_parsed_recently(why):
    result = parsing.files(why.store, interval_s=30, intervals=3, now=why.now)
    assert result.files.fileloc.iloc[0].endswith("slow.py")
    assert result.files.parse_duration_s.iloc[0] == 2.5
    assert result.files.dag_count.iloc[0] == 3
    assert result.total_files == 3 and result.stale_files == 0  # the processor beat 20 s ago
    assert not result.files.stale.any()
    # ten minutes later without a pass, every file parsed before the cutoff is stale
    later = parsing.files(
        why.store, interval_s=30, intervals=3, now=why.now + timedelta(minutes=10)
    )
    assert later.stale_files == 3 and later.files.stale.all()
    assert later.stale_after_s == 90


def test_import_errors_with_first_and_last_seen(why):
    errors = parsing.import_errors(why.store).set_index("filename")
    old = errors.loc[next(name for name in errors.index if name.endswith("old_broken.py"))]
    assert old.error == "ModuleNotFoundError: No module named 'pandas_extra'"
    assert old.first_seen == why.now - timedelta(days=2)
    assert old.last_seen == why.now - timedelta(minutes=1)
    assert "Traceback" in old.stacktrace
