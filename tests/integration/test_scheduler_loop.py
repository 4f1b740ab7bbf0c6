"""The real loop with the local executor: drain-and-exit runs, observed concurrency,
retries, timeouts, callbacks, restarts, SIGTERM and the single-scheduler rule."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from engine import api
from engine.execution import get_executor
from engine.parsing.parser import process_folders
from engine.scheduling.scheduler import Scheduler
from engine.store import pools, runs
from engine.store.models import CallbackRecord, DagRun, TaskTry
from tests.helpers import run_cli, start_cli


@pytest.fixture
def loop_config(store):
    from engine import runtime

    return runtime.get_config().with_overrides(  # the config that points at `store`
        core__load_examples=False,
        core__dags_are_paused_at_creation=False,
        scheduler__loop_interval=0.2,
    )


@pytest.fixture
def ledger(home) -> Path:
    return home / "ledger.jsonl"


@pytest.fixture
def add_dag(store, loop_config, ledger):
    """Write a DAG file whose tasks can call `record(name)` to log start/end times."""
    folder = loop_config["core.dags_folder"]
    folder.mkdir(parents=True, exist_ok=True)

    def _add(name: str, source: str) -> None:
        header = textwrap.dedent(
            f"""
            import json, os, time
            from datetime import timedelta
            import pendulum
            from engine import *

            LEDGER = {str(ledger)!r}

            def record(name, seconds=0.0):
                start = time.time()
                time.sleep(seconds)
                with open(LEDGER, "a") as out:
                    out.write(json.dumps({{"task": name, "start": start, "end": time.time(),
                                          "pid": os.getpid()}}) + "\\n")
            """
        )
        (folder / f"{name}.py").write_text(header + textwrap.dedent(source))
        report = process_folders(store, loop_config)
        assert report.import_errors == 0, [r.error for r in report.results]

    return _add


def entries(ledger: Path) -> list[dict]:
    if not ledger.exists():
        return []
    return [json.loads(line) for line in ledger.read_text().splitlines()]


def max_overlap(spans: list[dict]) -> int:
    events = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans])
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def drain(store, config, **overrides) -> Scheduler:
    config = config.with_overrides(**overrides) if overrides else config
    scheduler = Scheduler(store, config, get_executor("local", config, store))
    scheduler.run(drain=True, grace=5)
    return scheduler


def trigger(store, dag_id: str, conf=None, when: datetime | None = None) -> str:
    return api.trigger_dag(
        store, dag_id, conf=conf, logical_date=when, actor="test", now=datetime.now(UTC)
    ).run_id


def run_state(store, dag_id: str, run_id: str) -> str:
    with store.session() as session:
        return runs.get_dag_run(session, dag_id, run_id).state


def test_drain_runs_a_chain_to_success_once_each(store, loop_config, add_dag, ledger):
    add_dag(
        "chain",
        """
        with DAG("chain", schedule=None):
            chain(*[PythonOperator(task_id=f"t{i}", python_callable=record, op_args=[f"t{i}"])
                    for i in range(5)])
        """,
    )
    run_id = trigger(store, "chain")
    drain(store, loop_config)
    assert run_state(store, "chain", run_id) == "success"
    spans = entries(ledger)
    assert [s["task"] for s in spans] == [f"t{i}" for i in range(5)]
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(spans))
    with store.session() as session:
        tries = session.execute(select(TaskTry)).scalars().all()
    assert {(t.task_id, t.try_number, t.state) for t in tries} == {
        (f"t{i}", 1, "success") for i in range(5)
    }
    assert all(t.hostname and t.pid != os.getpid() for t in tries)


def test_branching_and_trigger_rules_through_the_loop(store, loop_config, add_dag, ledger):
    add_dag(
        "branches",
        """
        @task.branch
        def pick():
            return "left"

        def boom():
            raise RuntimeError("no")

        with DAG("branches", schedule=None):
            left = PythonOperator(task_id="left", python_callable=record, op_args=["left"])
            right = PythonOperator(task_id="right", python_callable=record, op_args=["right"])
            join = PythonOperator(task_id="join", python_callable=record, op_args=["join"],
                                  trigger_rule=TriggerRule.NONE_FAILED)
            pick() >> [left, right]
            [left, right] >> join
            failing = PythonOperator(task_id="failing", python_callable=boom)
            on_fail = PythonOperator(task_id="on_fail", python_callable=record,
                                     op_args=["on_fail"], trigger_rule=TriggerRule.ONE_FAILED)
            after = EmptyOperator(task_id="after")
            failing >> [on_fail, after]
        """,
    )
    run_id = trigger(store, "branches")
    drain(store, loop_config)
    with store.session() as session:
        states = {
            ti.task_id: ti.state for ti in runs.get_task_instances(session, "branches", run_id)
        }
    assert states == {
        "pick": "success",
        "left": "success",
        "right": "skipped",
        "join": "success",
        "failing": "failed",
        "on_fail": "success",
        "after": "upstream_failed",
    }
    assert sorted(s["task"] for s in entries(ledger)) == ["join", "left", "on_fail"]
    assert run_state(store, "branches", run_id) == "failed"


@pytest.mark.parametrize(
    ("limit", "dag_args", "task_args", "overrides"),
    [
        (2, "", "", {"core__parallelism": 2}),
        (2, "", "pool='pair'", {}),
        (3, "max_active_tasks=3", "", {}),
        (1, "", "max_active_tis_per_dag=1", {}),
    ],
    ids=["parallelism", "pool", "max_active_tasks", "max_active_tis_per_dag"],
)
def test_observed_concurrency_never_exceeds_the_limit(
    store, loop_config, add_dag, ledger, limit, dag_args, task_args, overrides
):
    with store.session() as session:
        pools.set_pool(session, "pair", 2)
    per_task = task_args.startswith("max_active_tis")
    add_dag(
        "wide",
        f"""
        with DAG("wide", schedule=None, {dag_args}):
            for i in range({1 if per_task else 6}):
                PythonOperator(task_id=f"t{{i}}", python_callable=record,
                               op_args=[f"t{{i}}", 0.4], {task_args})
        """,
    )
    run_ids = [trigger(store, "wide")]
    if per_task:  # the same task in several runs at once
        for day in (2, 3, 4):
            run_ids.append(trigger(store, "wide", when=datetime(2026, 1, day, tzinfo=UTC)))
    drain(store, loop_config, **overrides)
    assert {run_state(store, "wide", run_id) for run_id in run_ids} == {"success"}
    spans = entries(ledger)
    assert len(spans) == (4 if per_task else 6)
    assert max_overlap(spans) == limit


def test_priority_weight_decides_who_goes_first(store, loop_config, add_dag, ledger):
    add_dag(
        "prio",
        """
        with DAG("prio", schedule=None):
            for name, weight in [("low", 1), ("high", 10), ("mid", 5)]:
                PythonOperator(task_id=name, python_callable=record, op_args=[name],
                               priority_weight=weight)
        """,
    )
    trigger(store, "prio")
    drain(store, loop_config, core__parallelism=1)
    assert [s["task"] for s in entries(ledger)] == ["high", "mid", "low"]


def test_retry_waits_its_delay_between_attempts(store, loop_config, add_dag, ledger):
    add_dag(
        "flaky",
        """
        def flaky(ti):
            record(f"try{ti.try_number}")
            if ti.try_number < 2:
                raise RuntimeError("first attempt fails")

        with DAG("flaky", schedule=None):
            PythonOperator(task_id="t", python_callable=flaky, retries=2,
                           retry_delay=timedelta(seconds=1))
        """,
    )
    run_id = trigger(store, "flaky")
    drain(store, loop_config)
    assert run_state(store, "flaky", run_id) == "success"
    first, second = entries(ledger)
    assert second["start"] - first["end"] >= 1.0
    with store.session() as session:
        tries = session.execute(select(TaskTry).order_by(TaskTry.try_number)).scalars().all()
    assert [(t.try_number, t.state) for t in tries] == [(1, "up_for_retry"), (2, "success")]


def test_timeout_kills_a_sleeping_task_and_its_child(store, loop_config, add_dag, home):
    pidfile = home / "child.pid"
    add_dag(
        "slow",
        f"""
        with DAG("slow", schedule=None):
            BashOperator(task_id="sleepy", bash_command="sleep 60 & echo $! > {pidfile}; wait",
                         execution_timeout=timedelta(seconds=1))
        """,
    )
    run_id = trigger(store, "slow")
    started = time.monotonic()
    drain(store, loop_config)
    assert time.monotonic() - started < 30
    assert run_state(store, "slow", run_id) == "failed"
    with store.session() as session:
        attempt = session.execute(select(TaskTry)).scalar_one()
    assert "timed out" in attempt.error
    assert not _alive(int(pidfile.read_text()))


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
        except FileNotFoundError:
            return False
        time.sleep(0.05)
    return True


def test_callbacks_run_and_a_raising_one_changes_nothing(store, loop_config, add_dag, home):
    marker = home / "dag_failed.txt"
    add_dag(
        "cb",
        f"""
        def boom():
            raise ValueError("boom")

        def raising(context):
            raise RuntimeError("callback bug")

        def on_dag_failure(context):
            open({str(marker)!r}, "w").write(context["run_id"])

        with DAG("cb", schedule=None, on_failure_callback=on_dag_failure):
            PythonOperator(task_id="t", python_callable=boom, on_failure_callback=raising)
        """,
    )
    run_id = trigger(store, "cb")
    drain(store, loop_config)
    assert run_state(store, "cb", run_id) == "failed"
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == run_id
    with store.session() as session:
        records = session.execute(select(CallbackRecord)).scalars().all()
    outcomes = {(r.task_id, r.kind, r.status) for r in records}
    assert ("t", "on_failure_callback", "failed") in outcomes
    assert (None, "on_failure_callback", "success") in outcomes


def test_a_metastore_error_in_a_tick_is_logged_and_retried(
    store, loop_config, add_dag, monkeypatch, caplog
):
    from engine.scheduling import run_creation

    add_dag(
        "resilient",
        """
        with DAG("resilient", schedule=None):
            EmptyOperator(task_id="t")
        """,
    )
    run_id = trigger(store, "resilient")
    real = run_creation.create_due_runs
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("SELECT 1", {}, Exception("database is unavailable"))
        return real(*args, **kwargs)

    monkeypatch.setattr(run_creation, "create_due_runs", flaky)
    drain(store, loop_config)
    assert run_state(store, "resilient", run_id) == "success"
    assert any("scheduler tick failed" in r.getMessage() for r in caplog.records)


# -- the scheduler as a process ------------------------------------------------------


def start_scheduler(env: dict, *args: str) -> subprocess.Popen:
    return start_cli(
        "scheduler",
        *args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def process_env(environ, loop_config, store):
    env = dict(environ)
    env.update(
        DAGWATCH__CORE__LOAD_EXAMPLES="false",
        DAGWATCH__CORE__DAGS_ARE_PAUSED_AT_CREATION="false",
        DAGWATCH__SCHEDULER__LOOP_INTERVAL="0.2",
        DAGWATCH__DATABASE__SQL_ALCHEMY_CONN=str(store.engine.url.render_as_string(False)),
    )
    return env


def test_restart_after_sigkill_resumes_without_running_anything_twice(
    store, add_dag, ledger, process_env
):
    add_dag(
        "restart",
        """
        with DAG("restart", schedule=None):
            chain(*[PythonOperator(task_id=f"t{i}", python_callable=record,
                                   op_args=[f"t{i}", 1.0]) for i in range(3)])
        """,
    )
    run_id = trigger(store, "restart")
    first = start_scheduler(process_env, "--no-parse")
    try:
        wait_for(lambda: _task_state(store, run_id, "t0") == "running")
    finally:
        first.kill()  # SIGKILL: no cleanup at all
        first.communicate()
    second = start_scheduler(process_env, "--no-parse", "--drain")
    _, err = second.communicate(timeout=90)
    assert second.returncode == 0, err
    assert run_state(store, "restart", run_id) == "success"
    assert sorted(s["task"] for s in entries(ledger)) == ["t0", "t1", "t2"]


def _task_state(store, run_id: str, task_id: str) -> str | None:
    with store.session() as session:
        for ti in runs.get_task_instances(session, "restart", run_id):
            if ti.task_id == task_id:
                return ti.state
    return None


def test_sigterm_stops_gracefully_and_records_the_stopped_attempt(store, add_dag, process_env):
    add_dag(
        "long",
        """
        with DAG("long", schedule=None):
            BashOperator(task_id="sleeper", bash_command="sleep 60")
        """,
    )
    run_id = trigger(store, "long")
    proc = start_scheduler(process_env, "--no-parse", "--grace", "1")
    wait_for(lambda: _long_state(store, run_id) == "running")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 20
    assert "scheduler stopped" in out
    wait_for(lambda: _long_state(store, run_id) in ("failed", "up_for_retry"))
    with store.session() as session:
        attempt = session.execute(select(TaskTry)).scalar_one()
    assert "SIGTERM" in (attempt.error or "")


def _long_state(store, run_id: str) -> str:
    with store.session() as session:
        (ti,) = runs.get_task_instances(session, "long", run_id)
        return ti.state


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_second_scheduler_on_sqlite_is_refused(store, process_env):
    first = start_scheduler(process_env, "--no-parse")
    try:
        wait_for(lambda: "scheduler started" in (first.stdout.readline() or ""))
        second = run_cli("scheduler", "--no-parse", env=process_env, timeout=30)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert second.returncode == 1
    assert "only one scheduler may run on SQLite" in second.stderr
    with store.session() as session:
        assert session.execute(select(DagRun)).first() is None
