"""Executors with real processes against the real metastore (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.execution import get_executor
from engine.execution.base import AttemptEvent, AttemptRequest, CallbackRequest
from engine.execution.local import LocalExecutor
from engine.execution.sequential import SequentialExecutor
from engine.parsing.parser import import_dag_file
from engine.parsing.serialization import serialize_dag
from engine.states import DagRunState, TaskState
from engine.store import runs, transitions
from engine.store.models import StateTransition

HEADER = """\
import os, signal, subprocess, sys, time
from datetime import timedelta
from pathlib import Path
from engine import DAG, BashOperator, EmptyOperator, PythonOperator
"""


@pytest.fixture(params=["worker", "process"])
def isolation(request) -> str:
    """`core.attempt_isolation`: attempts run in their worker, or each in a forked process."""
    return request.param


@pytest.fixture
def exec_config(config, store, isolation):
    """The test's config pointed at the test's metastore, heartbeats every second."""
    url = store.url.render_as_string(hide_password=False)
    return config.with_overrides(
        database__sql_alchemy_conn=url,
        scheduler__heartbeat_timeout=6,
        core__attempt_isolation=isolation,
    )


@pytest.fixture
def local(exec_config) -> Iterator[Callable[..., LocalExecutor]]:
    made: list[LocalExecutor] = []

    def make(parallelism: int = 4, **overrides: object) -> LocalExecutor:
        config = exec_config.with_overrides(**overrides) if overrides else exec_config
        executor = LocalExecutor(config, parallelism=parallelism)
        executor.start()
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.end(grace=0)


def write_dag(folder: Path, body: str, name: str = "dag_file.py") -> Path:
    path = folder / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def queue_run(
    store, path: Path, dag_id: str, run_id: str = "manual__1"
) -> dict[str, AttemptRequest]:
    """A running DAG run whose task instances are all queued, and their requests."""
    dag = next(d for d in import_dag_file(path) if d.dag_id == dag_id)
    now = datetime.now(UTC)
    with store.session() as session:
        runs.create_dag_run(
            session, serialize_dag(dag), run_id=run_id, run_type="manual", logical_date=now,
            data_interval=(now, now), conf={}, state=DagRunState.RUNNING, now=now,
        )  # fmt: skip
        session.flush()
        tis = runs.get_task_instances(session, dag_id, run_id)
        ids = [ti.id for ti in tis]
        for before, after in (("none", "scheduled"), ("scheduled", "queued")):
            transitions.transition_task_instances(
                session, ids, expected=TaskState(before), to=TaskState(after), at=now
            )
    requests = {}
    for ti in tis:
        timeout = dag.get_task(ti.task_id).execution_timeout
        requests[ti.task_id] = AttemptRequest(
            ti.id, dag_id, run_id, ti.task_id, str(path),
            execution_timeout=timeout.total_seconds() if timeout else None,
        )  # fmt: skip
    return requests


def drive(executor, count: int, timeout: float = 20.0) -> list[AttemptEvent]:
    """wait()/collect() until `count` events arrived; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    events: list[AttemptEvent] = []
    while len(events) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(events)} of {count} events after {timeout} s: {events}"
        executor.wait(min(remaining, 1.0))
        events += executor.collect()
    return events


def succeed_one_by_one(executor, requests: list[AttemptRequest]) -> None:
    """Queue each request once the one before it ended, each to succeed."""
    for request in requests:
        executor.queue([request])
        assert drive(executor, 1)[0].state is TaskState.SUCCESS


def ti_row(store, ti_id: int):
    with store.session() as session:
        row = runs.get_task_instance(session, ti_id)
        session.expunge(row)
    return row


def until(executor, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Let the executor work until `predicate()` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        executor.wait(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for its parent is dead too
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def reasons(store, ti_id: int) -> list[str | None]:
    """The reasons of the task instance's recorded transitions, oldest first."""
    row = ti_row(store, ti_id)
    with store.session() as session:
        return list(
            session.execute(
                select(StateTransition.reason)
                .where(
                    StateTransition.dag_id == row.dag_id,
                    StateTransition.run_id == row.run_id,
                    StateTransition.task_id == row.task_id,
                )
                .order_by(StateTransition.id)
            ).scalars()
        )


def test_a_noop_attempt_succeeds_in_its_own_process(store, local, tmp_path):
    path = write_dag(tmp_path, 'with DAG("noop", schedule=None):\n    EmptyOperator(task_id="t")\n')
    request = queue_run(store, path, "noop")["t"]
    executor = local()
    executor.queue([request])
    (event,) = drive(executor, 1)
    assert (event.ti_id, event.task_id, event.state, event.lost) == (
        request.ti_id,
        "t",
        "success",
        False,
    )
    assert event.exit_code == 0
    row = ti_row(store, request.ti_id)
    assert (row.state, row.try_number) == ("success", 1)
    assert row.hostname and row.pid and row.pid != os.getpid()
    assert executor.running_ti_ids() == set() and executor.open_slots == 4


@pytest.mark.parametrize("isolation", ["process"])
def test_the_worker_records_a_plain_attempt_around_its_process(store, local, tmp_path):
    """A task without callbacks: its worker records it as running before the fork and
    records the outcome after the attempt process exited; the row still carries the
    attempt process's pid, the log reads in order, and what the task pushed is kept."""
    pids = tmp_path / "pids.txt"
    path = write_dag(
        tmp_path,
        f"""
        def work():
            Path({str(pids)!r}).write_text(f"{{os.getppid()}} {{os.getpid()}}")
            print("the task speaks")
            return "pushed by the task"

        with DAG("recorded", schedule=None):
            PythonOperator(task_id="t", python_callable=work)
        """,
    )
    request = queue_run(store, path, "recorded")["t"]
    executor = local(parallelism=1)
    executor.queue([request])
    (event,) = drive(executor, 1)
    worker, attempt = map(int, pids.read_text().split())
    assert (event.state, event.pid, event.exit_code) == ("success", attempt, 0)
    row = ti_row(store, request.ti_id)
    assert (row.state, row.try_number, row.pid) == ("success", 1, attempt)
    assert attempt != worker
    with store.session() as session:
        (attempt_row,) = runs.list_tries(session, row.dag_id, row.run_id)
        pushed = runs.get_xcoms(
            session, dag_id=row.dag_id, run_id=row.run_id, task_ids=["t"], key="return_value"
        )
    assert (attempt_row.pid, attempt_row.state) == (attempt, "success")
    assert pushed == {"t": "pushed by the task"}
    log = Path(attempt_row.log_path).read_text()
    order = [log.index(s) for s in ("starting attempt 1", "the task speaks", "attempt 1 ended")]
    assert order == sorted(order), log
    assert "attempt 1 ended: success" in log


def test_parallelism_is_respected_and_the_rest_waits_in_order(store, local, tmp_path):
    marks = tmp_path / "marks.txt"
    path = write_dag(
        tmp_path,
        f"""
        def work(ti):
            with open({str(marks)!r}, "a") as out:
                out.write(f"start {{time.time()}} {{ti.task_id}}\\n")
            time.sleep(0.5)
            with open({str(marks)!r}, "a") as out:
                out.write(f"end {{time.time()}} {{ti.task_id}}\\n")

        with DAG("wide", schedule=None):
            for n in range(4):
                PythonOperator(task_id=f"w{{n}}", python_callable=work)
        """,
    )
    requests = list(queue_run(store, path, "wide").values())
    executor = local(parallelism=2)
    executor.queue(requests)
    assert executor.open_slots == 0
    assert executor.running_ti_ids() == {r.ti_id for r in requests}
    events = drive(executor, 4)
    assert sorted(e.task_id for e in events) == ["w0", "w1", "w2", "w3"]
    assert all(e.state is TaskState.SUCCESS for e in events)
    lines = [line.split() for line in marks.read_text().splitlines()]
    running = peak = 0
    for kind, _at, _task in sorted(lines, key=lambda line: (float(line[1]), line[0] == "start")):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2
    starts = [task for kind, _at, task in lines if kind == "start"]
    assert set(starts[2:]) == {"w2", "w3"}  # held requests start first in, first out
    assert executor.open_slots == 2


def test_a_task_that_kills_its_process_is_lost_and_the_executor_goes_on(
    store, local, tmp_path, isolation
):
    path = write_dag(
        tmp_path,
        """
        with DAG("suicide", schedule=None):
            PythonOperator(task_id="die", python_callable=lambda: os.kill(os.getpid(), 9))
            EmptyOperator(task_id="after")
        """,
    )
    requests = queue_run(store, path, "suicide")
    executor = local()
    executor.queue([requests["die"]])
    (event,) = drive(executor, 1)
    assert event.lost and event.state is None and event.exit_code == -9
    unrecorded = {
        "process": "before recording an outcome",
        "worker": "before the attempt recorded an outcome",  # the process was its worker
    }[isolation]
    assert "signal SIGKILL" in event.error and unrecorded in event.error
    assert ti_row(store, requests["die"].ti_id).state == "running"  # a zombie for the scheduler
    executor.queue([requests["after"]])
    (event,) = drive(executor, 1)
    assert event.state is TaskState.SUCCESS


def test_execution_timeout_stops_a_sleeping_task_and_its_child(store, local, tmp_path):
    pidfile = tmp_path / "child.pid"
    path = write_dag(
        tmp_path,
        f"""
        with DAG("timeouts", schedule=None):
            BashOperator(
                task_id="sleepy",
                bash_command="sleep 60 & echo $! > {pidfile}; wait",
                execution_timeout=timedelta(seconds=1),
            )
        """,
    )
    request = queue_run(store, path, "timeouts")["sleepy"]
    assert request.execution_timeout == 1.0
    executor = local()
    started = time.monotonic()
    executor.queue([request])
    (event,) = drive(executor, 1)
    assert time.monotonic() - started < 8
    assert event.state is TaskState.FAILED and "timed out" in event.error
    child = int(pidfile.read_text())
    until(executor, lambda: not alive(child), timeout=5)


def test_a_task_ignoring_its_timeout_is_killed_with_its_process_tree(store, local, tmp_path):
    pids = tmp_path / "pids.txt"
    path = write_dag(
        tmp_path,
        f"""
        def stubborn():
            signal.signal(signal.SIGALRM, signal.SIG_IGN)  # ignores execution_timeout
            same_group = subprocess.Popen(["sleep", "60"])
            own_session = subprocess.Popen(["sleep", "61"], start_new_session=True)
            Path({str(pids)!r}).write_text(f"{{same_group.pid}} {{own_session.pid}}")
            time.sleep(60)

        with DAG("stubborn", schedule=None):
            PythonOperator(
                task_id="t", python_callable=stubborn, execution_timeout=timedelta(seconds=1)
            )
        """,
    )
    request = queue_run(store, path, "stubborn")["t"]
    executor = local()
    executor.hard_timeout_grace = 0.5
    executor.queue([request])
    (event,) = drive(executor, 1, timeout=10)
    assert event.lost and event.exit_code == -9
    assert "execution_timeout of 1 s" in event.error
    for pid in map(int, pids.read_text().split()):
        until(executor, lambda pid=pid: not alive(pid), timeout=5)


def test_terminate_stops_a_long_task_and_the_runner_records_why(store, local, tmp_path):
    deaf_now = tmp_path / "deaf"
    path = write_dag(
        tmp_path,
        f"""
        def deaf():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            Path({str(deaf_now)!r}).touch()
            time.sleep(60)

        with DAG("long", schedule=None):
            PythonOperator(task_id="sleeper", python_callable=lambda: time.sleep(60))
            PythonOperator(task_id="deaf", python_callable=deaf)
        """,
    )
    requests = queue_run(store, path, "long")
    executor = local()
    executor.kill_grace = 0.5
    executor.queue(list(requests.values()))
    ids = [r.ti_id for r in requests.values()]
    # stopped before it ignores SIGTERM, "deaf" would rightly end like "sleeper"
    until(executor, lambda: deaf_now.exists())
    until(executor, lambda: all(ti_row(store, i).state == "running" for i in ids))
    executor.terminate(ids, "marked failed by alice")
    events = {e.task_id: e for e in drive(executor, 2, timeout=10)}
    stopped = events["sleeper"]
    assert stopped.state is TaskState.FAILED
    assert stopped.error == "stopped: marked failed by alice (received SIGTERM)"
    assert ti_row(store, requests["sleeper"].ti_id).state == "failed"
    assert "stopped: marked failed by alice (received SIGTERM)" in reasons(store, stopped.ti_id)
    killed = events["deaf"]
    assert killed.lost and killed.exit_code == -9
    assert "after SIGTERM: marked failed by alice" in killed.error


def test_heartbeats_advance_while_the_attempt_runs(store, local, tmp_path):
    path = write_dag(
        tmp_path,
        """
        with DAG("beating", schedule=None):
            PythonOperator(task_id="t", python_callable=lambda: time.sleep(2.5))
        """,
    )
    request = queue_run(store, path, "beating")["t"]
    executor = local()
    executor.queue([request])
    seen = set()
    events: list[AttemptEvent] = []
    deadline = time.monotonic() + 15
    while not events and time.monotonic() < deadline:
        row = ti_row(store, request.ti_id)
        if row.state == "running":
            seen.add(row.last_heartbeat)
            start = row.start_date
        executor.wait(0.2)
        events = executor.collect()
    assert events and events[0].state is TaskState.SUCCESS
    assert len(seen) >= 2, seen
    assert (max(seen) - start).total_seconds() >= 0.9


def test_end_waits_for_short_tasks_stops_long_ones_and_drops_held(store, local, tmp_path):
    path = write_dag(
        tmp_path,
        """
        with DAG("ending", schedule=None):
            PythonOperator(task_id="short", python_callable=lambda: time.sleep(0.5))
            PythonOperator(task_id="long", python_callable=lambda: time.sleep(60))
            EmptyOperator(task_id="held")
        """,
    )
    requests = queue_run(store, path, "ending")
    executor = local(parallelism=2)
    executor.queue([requests["short"], requests["long"], requests["held"]])
    until(executor, lambda: ti_row(store, requests["long"].ti_id).state == "running")
    started = time.monotonic()
    executor.end(grace=1.5)
    assert time.monotonic() - started < 6
    events = {e.task_id: e for e in executor.collect()}
    assert set(events) == {"short", "long"}
    assert events["short"].state is TaskState.SUCCESS
    assert events["long"].state is TaskState.FAILED
    assert "the executor is shutting down" in events["long"].error
    assert ti_row(store, requests["held"].ti_id).state == "queued"
    assert executor.running_ti_ids() == set()
    with pytest.raises(RuntimeError, match="ended"):
        executor.queue([requests["held"]])


def test_callbacks_run_in_a_child_and_are_recorded(store, local, tmp_path):
    out = tmp_path / "callback.txt"
    path = write_dag(
        tmp_path,
        f"""
        def on_dag_failure(context):
            text = f"{{os.getpid()}} {{context['run_id']}} {{context['reason']}}"
            Path({str(out)!r}).write_text(text)

        def on_task_failure(context):
            assert context["ti"].task_id == "t"

        with DAG("calling", schedule=None, on_failure_callback=on_dag_failure):
            EmptyOperator(task_id="t", on_failure_callback=on_task_failure)
        """,
    )
    request = queue_run(store, path, "calling")["t"]
    executor = local(parallelism=1)
    kind = "on_failure_callback"
    executor.queue_callbacks(
        [
            CallbackRequest("calling", request.run_id, str(path), kind, reason="boom"),
            CallbackRequest(
                "calling", request.run_id, str(path), kind, task_id="t", reason="zombie"
            ),
        ]
    )
    assert executor.open_slots == 1

    def recorded():
        executor.collect()
        with store.session() as session:
            return len(runs.list_callbacks(session, "calling", request.run_id)) == 2

    until(executor, recorded)
    pid, run_id, reason = out.read_text().split()
    assert int(pid) != os.getpid() and (run_id, reason) == (request.run_id, "boom")
    with store.session() as session:
        records = runs.list_callbacks(session, "calling", request.run_id)
        outcomes = sorted(
            (r.task_id or "", r.callback.rsplit(".", 1)[-1], r.status) for r in records
        )
    assert outcomes == [("", "on_dag_failure", "success"), ("t", "on_task_failure", "success")]
    assert executor.collect() == []


def test_a_missing_dag_file_or_task_fails_the_task_instance_with_the_reason(store, local, tmp_path):
    path = write_dag(
        tmp_path,
        """
        with DAG("gone", schedule=None):
            EmptyOperator(task_id="a")
            EmptyOperator(task_id="b")
        """,
    )
    requests = queue_run(store, path, "gone")
    write_dag(tmp_path, 'with DAG("gone", schedule=None):\n    EmptyOperator(task_id="b")\n')
    moved = AttemptRequest(**{**requests["b"].__dict__, "fileloc": str(tmp_path / "nowhere.py")})
    executor = local()
    executor.queue([requests["a"], moved])
    events = {e.task_id: e for e in drive(executor, 2)}
    assert events["a"].state is TaskState.FAILED
    assert "task 'a' is not in DAG 'gone'" in events["a"].error
    assert events["b"].state is TaskState.FAILED
    assert "nowhere.py cannot be read" in events["b"].error
    for request in (requests["a"], moved):
        row = ti_row(store, request.ti_id)
        assert (row.state, row.try_number) == ("failed", 0)
        assert reasons(store, request.ti_id)[-1].startswith("the attempt could not start")


def test_the_sequential_executor_runs_attempts_in_order_importing_once(
    store, exec_config, tmp_path
):
    order, imports = tmp_path / "order.txt", tmp_path / "imports.txt"
    path = write_dag(
        tmp_path,
        f"""
        with open({str(imports)!r}, "a") as out:
            out.write("import\\n")

        def note(ti):
            with open({str(order)!r}, "a") as out:
                out.write(ti.task_id + "\\n")

        with DAG("inorder", schedule=None):
            for name in ("c", "a", "b"):
                PythonOperator(task_id=name, python_callable=note)
        """,
    )
    requests = queue_run(store, path, "inorder")
    executor = get_executor("sequential", exec_config, store)
    assert isinstance(executor, SequentialExecutor)
    executor.start()
    executor.queue([requests[name] for name in ("b", "c", "a")])
    assert executor.wait(10) is True
    events = executor.collect()
    assert [(e.task_id, e.state) for e in events] == [
        ("b", "success"),
        ("c", "success"),
        ("a", "success"),
    ]
    assert order.read_text().split() == ["b", "c", "a"]
    assert imports.read_text().split() == ["import", "import"]  # the test's, the executor's
    assert executor.wait(0) is False and executor.collect() == []


def test_a_stop_before_the_task_code_runs_takes_effect_once_it_does(store, local, tmp_path):
    importing = tmp_path / "importing"
    path = write_dag(
        tmp_path,
        f"""
        if os.getpid() != {os.getpid()}:  # slow to import in the attempt process only
            Path({str(importing)!r}).touch()
            time.sleep(1)

        with DAG("slow_import", schedule=None):
            PythonOperator(task_id="t", python_callable=lambda: time.sleep(60))
        """,
    )
    request = queue_run(store, path, "slow_import")["t"]
    executor = local()
    executor.queue([request])
    until(executor, importing.exists)
    executor.terminate([request.ti_id], "run timed out")
    (event,) = drive(executor, 1, timeout=10)
    assert event.state is TaskState.FAILED
    assert event.error == "stopped: run timed out (received SIGTERM)"
    assert ti_row(store, request.ti_id).try_number == 1


# -- the local executor's long-lived workers -----------------------------------------


def pid_pairs(path: Path) -> list[list[str]]:
    """Whitespace-separated lines a task wrote, complete lines only."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines(keepends=True) if "\n" in line]


def worker_pid(parent: int | str, own: int | str, isolation: str) -> int:
    """The worker of a task that wrote its `os.getppid()` and `os.getpid()`: its parent
    where it ran in a process of its own, else its own process."""
    return int(parent if isolation == "process" else own)


def test_a_worker_killed_with_sigkill_is_replaced_and_its_attempt_lost(
    store, local, tmp_path, isolation
):
    pids = tmp_path / "pids.txt"
    path = write_dag(
        tmp_path,
        f"""
        def note():
            with open({str(pids)!r}, "a") as out:  # worker pid, attempt pid
                out.write(f"{{os.getppid()}} {{os.getpid()}}\\n")

        def note_and_sleep():
            note()
            time.sleep(60)

        with DAG("orphaned", schedule=None):
            PythonOperator(task_id="victim", python_callable=note_and_sleep)
            PythonOperator(task_id="after", python_callable=note)
        """,
    )
    requests = queue_run(store, path, "orphaned")
    executor = local(parallelism=1)
    executor.queue([requests["victim"]])
    until(executor, lambda: len(pid_pairs(pids)) == 1)
    parent, attempt = map(int, pid_pairs(pids)[0])
    worker = worker_pid(parent, attempt, isolation)
    assert (attempt != worker) == (isolation == "process")
    assert ti_row(store, requests["victim"].ti_id).pid == attempt
    os.kill(worker, signal.SIGKILL)
    (event,) = drive(executor, 1)
    assert event.lost and event.pid == attempt and event.exit_code == -9
    assert "the worker running the attempt exited with code -9 (signal SIGKILL)" in event.error
    assert "before the attempt recorded an outcome" in event.error
    until(executor, lambda: not alive(attempt), timeout=5)  # not left running unsupervised
    executor.queue([requests["after"]])
    (event,) = drive(executor, 1)
    assert event.state is TaskState.SUCCESS
    replacement = worker_pid(*pid_pairs(pids)[1], isolation)
    assert replacement != worker and alive(replacement)
    assert executor.running_ti_ids() == set() and executor.open_slots == 1


def test_a_worker_imports_each_version_of_a_dag_file_once(store, local, tmp_path, isolation):
    imports, notes = tmp_path / "imports.txt", tmp_path / "notes.txt"
    source = f"""
        VERSION = {{version}}
        with open({str(imports)!r}, "a") as out:
            out.write(f"{{{{os.getpid()}}}} {{{{VERSION}}}}\\n")

        def note(ti):
            with open({str(notes)!r}, "a") as out:
                pids = f"{{{{os.getppid()}}}} {{{{os.getpid()}}}}"
                out.write(f"{{{{ti.task_id}}}} {{{{VERSION}}}} {{{{pids}}}}\\n")

        with DAG("versions", schedule=None):
            for name in ("a", "b", "c"):
                PythonOperator(task_id=name, python_callable=note)
        """
    path = write_dag(tmp_path, source.format(version=1))
    requests = queue_run(store, path, "versions")
    executor = local(parallelism=1)
    succeed_one_by_one(executor, [requests["a"], requests["b"]])
    write_dag(tmp_path, source.format(version=2))
    stat = path.stat()  # a new version even where the clock is coarse
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    succeed_one_by_one(executor, [requests["c"]])
    ran = pid_pairs(notes)
    (worker,) = {worker_pid(parent, own, isolation) for _task, _version, parent, own in ran}
    assert [(task, version) for task, version, *_ in ran] == [("a", "1"), ("b", "1"), ("c", "2")]
    by_worker = [version for pid, version in pid_pairs(imports) if int(pid) == worker]
    assert by_worker == ["1", "2"]


def test_attempts_of_two_dag_files_share_the_workers(store, local, tmp_path, isolation):
    notes, imports = tmp_path / "notes.txt", tmp_path / "imports.txt"
    requests = []
    for name in ("left", "right"):
        path = write_dag(
            tmp_path,
            f"""
            with open({str(imports)!r}, "a") as out:
                out.write(f"{{os.getpid()}} {name}\\n")

            def note(ti):
                line = f"{name} {{ti.dag_id}} {{ti.task_id}} {{os.getppid()}} {{os.getpid()}}"
                with open({str(notes)!r}, "a") as out:
                    out.write(line + "\\n")

            with DAG("{name}", schedule=None):
                for n in range(4):
                    PythonOperator(task_id=f"t{{n}}", python_callable=note)
            """,
            name=f"{name}.py",
        )
        requests.append(list(queue_run(store, path, name).values()))
    executor = local(parallelism=2)
    executor.queue([r for pair in zip(*requests, strict=True) for r in pair])  # interleaved
    events = drive(executor, 8)
    assert all(e.state is TaskState.SUCCESS for e in events)
    ran = pid_pairs(notes)
    assert sorted((code, dag, task) for code, dag, task, _w, _a in ran) == sorted(
        (dag, dag, f"t{n}") for dag in ("left", "right") for n in range(4)
    )  # each attempt ran the code of its own DAG file
    workers = {worker_pid(parent, own, isolation) for *_rest, parent, own in ran}
    attempt_processes = {own for *_rest, own in ran}
    assert len(workers) <= 2
    assert len(attempt_processes) == (8 if isolation == "process" else len(workers))
    loaded = [(int(pid), name) for pid, name in pid_pairs(imports) if int(pid) in workers]
    assert len(loaded) == len(set(loaded))  # each worker imported each file at most once
    assert {name for _pid, name in loaded} == {"left", "right"}


def test_an_idle_worker_is_retired_and_a_new_one_spawned_on_demand(
    store, local, tmp_path, isolation
):
    pids = tmp_path / "pids.txt"
    path = write_dag(
        tmp_path,
        f"""
        def note():
            with open({str(pids)!r}, "a") as out:
                out.write(f"{{os.getppid()}} {{os.getpid()}}\\n")

        with DAG("idle", schedule=None):
            for name in ("a", "b"):
                PythonOperator(task_id=name, python_callable=note)
        """,
    )
    requests = queue_run(store, path, "idle")
    executor = local(parallelism=4)
    executor.worker_idle_timeout = 0.5
    succeed_one_by_one(executor, [requests["a"]])
    (first,) = [worker_pid(*pair, isolation) for pair in pid_pairs(pids)]
    until(executor, lambda: not alive(first), timeout=5)
    succeed_one_by_one(executor, [requests["b"]])
    second = worker_pid(*pid_pairs(pids)[1], isolation)
    assert second != first and alive(second)


def test_a_retry_queued_while_the_last_attempt_runs_its_callbacks_starts_after_it(
    store, local, tmp_path
):
    """The runner records up_for_retry, then runs on_retry_callback: the scheduler may queue
    the retry before that process exits. It must wait for it, never be dropped."""
    path = write_dag(
        tmp_path,
        """
        def slow_callback(context):
            time.sleep(2)

        def first_try_fails(ti):
            if ti.try_number == 1:
                raise RuntimeError("first try")

        with DAG("retrying", schedule=None):
            PythonOperator(
                task_id="t", python_callable=first_try_fails, retries=1,
                on_retry_callback=slow_callback,
            )
        """,
    )
    request = queue_run(store, path, "retrying")["t"]
    executor = local(parallelism=2)
    executor.queue([request])
    until(executor, lambda: ti_row(store, request.ti_id).state == "up_for_retry")
    assert request.ti_id in executor.running_ti_ids()  # still in its callback
    now = datetime.now(UTC)
    with store.session() as session:
        for before, after in (("up_for_retry", "scheduled"), ("scheduled", "queued")):
            transitions.transition_task_instances(
                session, [request.ti_id], expected=TaskState(before), to=TaskState(after), at=now
            )
    executor.queue([request])

    events = drive(executor, 2)

    assert [event.state for event in events] == [TaskState.UP_FOR_RETRY, TaskState.SUCCESS]
    row = ti_row(store, request.ti_id)
    assert (row.state, row.try_number) == ("success", 2)


# -- attempts run in their worker (core.attempt_isolation = worker) -------------------


@pytest.mark.parametrize("isolation", ["worker"])
def test_a_worker_that_an_attempt_changed_is_replaced_before_the_next(store, local, tmp_path):
    """Attempts share their worker until one leaves a mark on it; the next attempt then
    runs in a fresh worker that knows nothing of it."""
    seen = tmp_path / "seen.txt"
    path = write_dag(
        tmp_path,
        f"""
        def note(ti):
            with open({str(seen)!r}, "a") as out:
                left = os.environ.get("LEFT_BEHIND", "-")
                out.write(f"{{ti.task_id}} {{os.getpid()}} {{left}}\\n")

        def dirty(ti):
            note(ti)
            os.environ["LEFT_BEHIND"] = "yes"

        with DAG("marks", schedule=None):
            for name in ("first", "second", "after"):
                PythonOperator(task_id=name, python_callable=note)
            PythonOperator(task_id="dirty", python_callable=dirty)
        """,
    )
    requests = queue_run(store, path, "marks")
    executor = local(parallelism=1)
    succeed_one_by_one(executor, [requests[n] for n in ("first", "second", "dirty", "after")])
    ran = {task: (int(pid), env) for task, pid, env in pid_pairs(seen)}
    assert ran["first"][0] == ran["second"][0] == ran["dirty"][0]  # one worker ran them
    assert ti_row(store, requests["first"].ti_id).pid == ran["first"][0]
    assert ran["after"][0] != ran["dirty"][0]  # a fresh one, not the changed one
    assert ran["after"][1] == "-"
    until(executor, lambda: not alive(ran["dirty"][0]), timeout=5)


@pytest.mark.parametrize("isolation", ["worker"])
def test_a_worker_is_replaced_after_its_max_attempts(store, local, tmp_path):
    seen = tmp_path / "seen.txt"
    path = write_dag(
        tmp_path,
        f"""
        def note(ti):
            with open({str(seen)!r}, "a") as out:
                out.write(f"{{ti.task_id}} {{os.getpid()}}\\n")

        with DAG("limited", schedule=None):
            for n in range(5):
                PythonOperator(task_id=f"t{{n}}", python_callable=note)
        """,
    )
    requests = queue_run(store, path, "limited")
    executor = local(parallelism=1, core__worker_max_attempts=2)
    succeed_one_by_one(executor, [requests[f"t{n}"] for n in range(5)])
    workers = [int(pid) for _task, pid in pid_pairs(seen)]
    assert workers[0] == workers[1] != workers[2] == workers[3] != workers[4]


def test_marking_the_run_failed_stops_its_running_attempt_and_its_child(store, local, tmp_path):
    """The attempt sees at its next heartbeat that its task instance is no longer running
    and stops as if the executor had stopped it: the task's child is killed, its try
    closed, and the task instance stays failed as marked (no retry)."""
    from engine.api.marking import mark_run

    pidfile = tmp_path / "child.pid"
    path = write_dag(
        tmp_path,
        f"""
        with DAG("marked", schedule=None, default_args={{"retries": 2}}):
            BashOperator(task_id="held", bash_command="sleep 60 & echo $! > {pidfile}; wait")
        """,
    )
    request = queue_run(store, path, "marked")["held"]
    executor = local()
    executor.queue([request])
    until(executor, lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    child = int(pidfile.read_text())

    mark_run(store, "marked", "manual__1", "failed", actor="alice")

    (event,) = drive(executor, 1, timeout=30)
    until(executor, lambda: not alive(child), timeout=10)
    row = ti_row(store, request.ti_id)
    assert (row.state, row.try_number) == ("failed", 1)
    with store.session() as session:
        (attempt,) = runs.list_tries(session, "marked", "manual__1")
        session.expunge(attempt)
    assert attempt.state == "failed" and attempt.end_date is not None
    assert "set to failed" in attempt.error
    assert not event.lost
