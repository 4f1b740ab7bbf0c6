"""Several `dagwatch scheduler` processes on one PostgreSQL, with the local executor.

Each task body writes one row to a ledger table whose task id is unique, with the times
it started and ended: a body that ran twice fails on the constraint (and the run with it),
and the times show how many ran at once, in a pool and in total.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select

from engine import api
from engine.parsing.parser import process_folders
from engine.store import pools, runs
from engine.store.models import Job, TaskInstance
from tests.helpers import start_cli

pytestmark = [pytest.mark.parametrize("store", ["postgres"], indirect=True)]

TASKS = 500
POOL_TASKS = 60
PARALLELISM = 8


@pytest.fixture
def ledger(store) -> str:
    """A ledger table of its own in the test database; its name."""
    name = f"ledger_{uuid.uuid4().hex[:12]}"
    with _connect(store) as conn:
        conn.execute(
            f"CREATE TABLE {name} (task_id text PRIMARY KEY, started double precision, "
            "ended double precision, pool text)"
        )
    yield name
    with _connect(store) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def _plain_url(store) -> str:
    return store.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _connect(store) -> psycopg.Connection:
    return psycopg.connect(_plain_url(store), autocommit=True)


@pytest.fixture
def process_env(environ, store) -> dict[str, str]:
    env = dict(environ)
    env.update(
        DAGWATCH__CORE__LOAD_EXAMPLES="false",
        DAGWATCH__CORE__DAGS_ARE_PAUSED_AT_CREATION="false",
        DAGWATCH__CORE__PARALLELISM=str(PARALLELISM),
        DAGWATCH__SCHEDULER__LOOP_INTERVAL="0.2",
        DAGWATCH__SCHEDULER__HEARTBEAT_TIMEOUT="10",
        DAGWATCH__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD="10",
        DAGWATCH__DATABASE__SQL_ALCHEMY_CONN=store.url.render_as_string(hide_password=False),
    )
    return env


@pytest.fixture
def wide_dag(store, config, ledger) -> str:
    """start >> 498 tasks (the first POOL_TASKS of them in pool "five") >> end."""
    from engine import runtime

    loop_config = runtime.get_config().with_overrides(
        core__load_examples=False, core__dags_are_paused_at_creation=False
    )
    folder: Path = loop_config["core.dags_folder"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wide.py").write_text(
        textwrap.dedent(
            f"""
            import time
            import psycopg
            from engine import DAG, PythonOperator

            def body(task_id, pool, seconds):
                started = time.time()
                time.sleep(seconds)
                with psycopg.connect({_plain_url(store)!r}, autocommit=True) as conn:
                    conn.execute(
                        "INSERT INTO {ledger} VALUES (%s, %s, %s, %s)",
                        (task_id, started, time.time(), pool),
                    )

            def task(task_id, pool="default_pool", seconds=0.0):
                return PythonOperator(task_id=task_id, python_callable=body,
                                      op_args=[task_id, pool, seconds], pool=pool, retries=2)

            with DAG("wide", schedule=None):
                middle = [task(f"p{{i}}", "five", 0.1) for i in range({POOL_TASKS})]
                middle += [task(f"t{{i}}") for i in range({TASKS - 2 - POOL_TASKS})]
                task("start") >> middle >> task("end")
            """
        )
    )
    with store.session() as session:
        pools.set_pool(session, "five", 5)
    report = process_folders(store, loop_config)
    assert report.import_errors == 0, [r.error for r in report.results]
    return api.trigger_dag(store, "wide", actor="test", now=datetime.now(UTC)).run_id


def _start(env: dict[str, str]) -> subprocess.Popen:
    return start_cli(
        "scheduler",
        "--no-parse",
        "--grace",
        "5",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(*procs: subprocess.Popen) -> list[str]:
    """SIGTERM what still runs; each one's stderr."""
    errors = []
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        errors.append(err)
    return errors


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout:g} s")


def _run_state(store, run_id: str) -> str:
    with store.session() as session:
        return runs.get_dag_run(session, "wide", run_id).state


def _ledger(store, ledger: str) -> list[tuple[str, float, float, str]]:
    with _connect(store) as conn:
        return conn.execute(f"SELECT task_id, started, ended, pool FROM {ledger}").fetchall()


def _peak(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def _finished_run(store, run_id: str, procs: list[subprocess.Popen]) -> None:
    def done() -> bool:
        for proc in procs:
            if proc.poll() is not None and proc.returncode not in (0, -signal.SIGKILL):
                raise AssertionError(f"a scheduler exited with {proc.returncode}")
        return _run_state(store, run_id) in ("success", "failed")

    _wait_for(done, 600, "the end of the run")


def _assert_each_body_ran_once(store, ledger: str, run_id: str) -> list:
    rows = _ledger(store, ledger)
    assert _run_state(store, run_id) == "success"
    assert len(rows) == TASKS  # the ledger's key refuses a second row per task
    with store.session() as session:
        tis = runs.get_task_instances(session, "wide", run_id)
    assert {ti.state for ti in tis} == {"success"}
    return rows


def test_two_schedulers_share_a_run_each_task_once_within_pool_and_parallelism(
    store, process_env, wide_dag, ledger
):
    procs = [_start(process_env), _start(process_env)]
    try:
        _finished_run(store, wide_dag, procs)
    finally:
        errors = _stop(*procs)
    rows = _assert_each_body_ran_once(store, ledger, wide_dag)
    with store.session() as session:
        tis = runs.get_task_instances(session, "wide", wide_dag)
        jobs = session.execute(select(Job.id).where(Job.job_type == "scheduler")).scalars().all()
    assert all(ti.try_number == 1 for ti in tis), "an attempt was retried"
    # both schedulers queued part of the run
    queued_by = {ti.queued_by_job_id for ti in tis}
    assert queued_by == set(jobs) and len(jobs) == 2, (queued_by, jobs, errors)
    # pools and parallelism hold across both schedulers
    assert 1 < _peak([(r[1], r[2]) for r in rows if r[3] == "five"]) <= 5
    assert _peak([(r[1], r[2]) for r in rows]) <= PARALLELISM


def test_sigkill_of_one_scheduler_mid_run_the_other_completes_it(
    store, process_env, wide_dag, ledger
):
    victim, survivor = _start(process_env), _start(process_env)
    try:
        _wait_for(lambda: len(_ledger(store, ledger)) >= 100, 300, "100 tasks done")
        with store.session() as session:
            victim_job = session.execute(select(Job.id).where(Job.pid == victim.pid)).scalar_one()
        held: list = []

        def victim_holds_attempts() -> bool:  # kill it while it holds some
            with store.session() as session:
                held[:] = session.execute(
                    select(TaskInstance.id).where(
                        TaskInstance.queued_by_job_id == victim_job,
                        TaskInstance.state.in_(["queued", "running"]),
                    )
                ).all()
            return bool(held)

        _wait_for(victim_holds_attempts, 300, "the scheduler to be killed holding attempts")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        _finished_run(store, wide_dag, [survivor])
        # the run may end before the survivor's housekeeping looks at the silent job
        _wait_for(
            lambda: _job_state(store, victim_job) == "failed",
            120,
            "the killed scheduler noticed by its stale heartbeat",
        )
    finally:
        errors = _stop(victim, survivor)
    _assert_each_body_ran_once(store, ledger, wide_dag)
    assert _job_state(store, victim_job) == "failed"  # noticed by its stale heartbeat
    assert f"scheduler job {victim_job} (pid {victim.pid}" in errors[1]


def test_a_second_scheduler_on_postgresql_is_not_refused(store, process_env):
    first, second = _start(process_env), _start(process_env)
    try:
        _wait_for(lambda: _count_running_jobs(store) == 2, 60, "two scheduler jobs running at once")
    finally:
        _stop(first, second)
    assert first.returncode == 0 and second.returncode == 0


def _job_state(store, job_id: int) -> str:
    with store.session() as session:
        return session.execute(select(Job.state).where(Job.id == job_id)).scalar_one()


def _count_running_jobs(store) -> int:
    with store.session() as session:
        return len(
            session.execute(
                select(Job.id).where(Job.job_type == "scheduler", Job.state == "running")
            ).all()
        )
