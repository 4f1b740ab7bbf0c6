"""No two tries of a task instance overlap: whatever an attempt started is gone before the
next try starts (or the task instance is failed), however the attempt ended.

Every process of a task body appends `start|beat|end <try> <time> <pid> <role>` lines to
a ledger, every 50 ms while it lives: the task's own process (the bash of a BashOperator,
the attempt process of a PythonOperator), children in its group, one that calls setsid,
a daemon that double-forks, one that ignores SIGTERM, and a child that starts a
grandchild in a session of its own that ignores SIGTERM too. The first try of each task
runs for a minute unless it is ended; the second runs a second. The checks: every
process of the first try started, the last line of one try is older than the first line
of the next, and no process of any try is still running at the end.

The scheduler runs for real, with the local executor in both `core.attempt_isolation`
modes, on SQLite and PostgreSQL; the attempt is SIGKILLed, timed out, made a zombie (its
process is SIGSTOPped so its heartbeats stop), or the scheduler is stopped with SIGTERM.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine import api, runtime
from engine.execution import get_executor
from engine.execution.base import AttemptRequest
from engine.execution.local import LocalExecutor
from engine.parsing.parser import process_folders
from engine.scheduling import scheduler as scheduler_module
from engine.scheduling.scheduler import Scheduler
from engine.states import TaskState
from engine.store import runs, transitions
from tests.helpers import start_cli

#: The processes below a task's own: role -> how it detaches.
CHILDREN = {
    "child": "plain",
    "setsid": "setsid",
    "daemon": "daemon",
    "deaf": "deaf",
    "spawner": "spawner",
}
#: Every role of a try: the task's own process, its children, the spawner's grandchild.
ROLES = {"task", *CHILDREN, "grandchild"}

#: One process of a task body: detach as `mode` says, then note its life in the ledger.
LEDGER_PROCESS = """\
import os, signal, subprocess, sys, time

ledger, try_number, role, mode, seconds = sys.argv[1:6]


def note(kind):
    line = f"{kind} {try_number} {time.time():.6f} {os.getpid()} {role}\\n"
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


if mode == "daemon":  # the classic double fork: the survivor's parent is long gone
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
elif mode == "setsid":
    os.setsid()
elif mode == "deaf":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif mode == "spawner":
    subprocess.Popen(
        [sys.executable, "-S", __file__, ledger, try_number, "grandchild", "deaf", seconds],
        start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
note("start")
until = time.time() + float(seconds)
while time.time() < until:
    time.sleep(0.05)
    note("beat")
note("end")
"""

#: The DAG: one task `t`, retried once at once; {operator} is bash or python.
DAG_SOURCE = '''\
import os, signal, subprocess, sys, time
from datetime import timedelta
from engine import DAG, BashOperator, PythonOperator

LEDGER = {ledger!r}
PROCESS = {process!r}
PYTHON = {python!r}
CHILDREN = {children!r}


def seconds(try_number):
    return "60" if try_number == 1 else "1"


def note(kind, try_number):
    line = f"{{kind}} {{try_number}} {{time.time():.6f}} {{os.getpid()}} task\\n"
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def body(ti):
    t = ti.try_number
    if {deaf_to_timeout!r}:
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
    note("start", t)
    children = [
        subprocess.Popen(
            [PYTHON, "-S", PROCESS, LEDGER, str(t), role, mode, seconds(t)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for role, mode in CHILDREN.items()
    ]
    until = time.time() + float(seconds(t))
    while time.time() < until:
        time.sleep(0.05)
        note("beat", t)
    for child in children:
        child.wait()
    note("end", t)


BASH = """
T=$DAGWATCH_CTX_TRY_NUMBER
if [ "$T" = 1 ]; then S=60; else S=1; fi
note() {{ echo "$1 $T $EPOCHREALTIME $$ task" >> '{ledger}'; }}
run() {{ '{python}' -S '{process}' '{ledger}' "$T" "$1" "$2" "$S" </dev/null >/dev/null 2>&1 & }}
note start
{bash_children}
end=$((SECONDS + S))
while [ $SECONDS -lt $end ]; do note beat; sleep 0.05; done
wait
note end
"""

with DAG("tree", schedule=None):
    common = dict(task_id="t", retries=1, retry_delay=timedelta(0), {extra})
    if {operator!r} == "bash":
        BashOperator(bash_command=BASH, **common)
    else:
        PythonOperator(python_callable=body, **common)
'''


@dataclass(frozen=True)
class Line:
    kind: str
    try_number: int
    at: float
    pid: int
    role: str


class Ledger:
    """The lines the task bodies wrote, and the processes behind them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[Line]:
        if not self.path.exists():
            return []
        lines = []
        for text in self.path.read_text().splitlines(keepends=True):
            kind, try_number, at, pid, role = text.split()
            if text.endswith("\n"):  # a complete line
                lines.append(Line(kind, int(try_number), float(at), int(pid), role))
        return lines

    def started(self, try_number: int) -> set[str]:
        return {
            line.role
            for line in self.lines()
            if line.try_number == try_number and line.kind == "start"
        }

    def running(self) -> set[tuple[int, str]]:
        """(pid, role) of the ledger's processes still running: those whose command line
        names the ledger. Not the `task` of a PythonOperator: that is the attempt process
        (a worker, or its fork), which the executor's own tests follow."""
        processes = {(line.pid, line.role) for line in self.lines()}  # once each, not per line
        return {(pid, role) for pid, role in processes if _running(pid, str(self.path))}

    def spans(self) -> dict[int, tuple[float, float]]:
        """Each try's first and last line."""
        spans: dict[int, tuple[float, float]] = {}
        for line in self.lines():
            first, last = spans.get(line.try_number, (line.at, line.at))
            spans[line.try_number] = (min(first, line.at), max(last, line.at))
        return spans

    def assert_tries_apart(self, tries: list[int]) -> None:
        spans = self.spans()
        assert sorted(spans) == tries, spans
        for earlier, later in itertools.pairwise(tries):
            late = [
                line
                for line in self.lines()
                if line.try_number == earlier and line.at >= spans[later][0]
            ]
            assert spans[earlier][1] < spans[later][0], (
                f"try {earlier} ran until {spans[earlier][1]:.3f}, after try {later} "
                f"started at {spans[later][0]:.3f}: {late[:5]}"
            )

    def kill_leftovers(self) -> None:
        for pid, _role in self.running():
            os.kill(pid, signal.SIGKILL)


def _running(pid: int, marker: str) -> bool:
    """Whether `pid` is alive (not a zombie) and still one of the ledger's processes (its
    command line names the ledger), not a stranger that took over a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :][0] != "Z" and marker.encode() in cmdline


def wait_for(condition: Callable[[], bool], timeout: float = 45.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {what}"
        time.sleep(0.05)


@pytest.fixture
def ledger(home) -> Iterator[Ledger]:
    ledger = Ledger(home / "ledger.txt")
    yield ledger
    ledger.kill_leftovers()  # a failed test must not leave a minute of processes behind


@pytest.fixture
def tree_config(store):
    return runtime.get_config().with_overrides(  # the config that points at `store`
        core__load_examples=False,
        core__dags_are_paused_at_creation=False,
        scheduler__loop_interval=0.2,
    )


@pytest.fixture
def tree_dag(store, tree_config, ledger, home) -> Callable[..., str]:
    """Write the DAG for `operator` (bash | python), parse it, trigger a run: its run_id."""

    def make(operator: str, *, extra: str = "", deaf_to_timeout: bool = False) -> str:
        process = home / "ledger_process.py"
        process.write_text(LEDGER_PROCESS)
        bash_children = "\n".join(f"run {role} {mode}" for role, mode in CHILDREN.items())
        source = DAG_SOURCE.format(
            ledger=str(ledger.path), process=str(process), python=sys.executable,
            children=CHILDREN, operator=operator, extra=extra,
            deaf_to_timeout=deaf_to_timeout, bash_children=bash_children,
        )  # fmt: skip
        folder = tree_config["core.dags_folder"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tree.py").write_text(source)
        report = process_folders(store, tree_config)
        assert report.import_errors == 0, [r.error for r in report.results]
        return api.trigger_dag(store, "tree", actor="test", now=datetime.now(UTC)).run_id

    return make


def task_instance(store, run_id: str):
    with store.session() as session:
        (ti,) = runs.get_task_instances(session, "tree", run_id)
        session.expunge(ti)
    return ti


def queued_request(store, tree_config, run_id: str) -> AttemptRequest:
    """Queue the run's task instance as the scheduler would: the executor's request."""
    ti = task_instance(store, run_id)
    now = datetime.now(UTC)
    with store.session() as session:
        for before, after in (
            (TaskState.NONE, TaskState.SCHEDULED),
            (TaskState.SCHEDULED, TaskState.QUEUED),
        ):
            transitions.transition_task_instances(
                session, [ti.id], expected=before, to=after, at=now
            )
    fileloc = str(tree_config["core.dags_folder"] / "tree.py")
    return AttemptRequest(ti.id, "tree", run_id, "t", fileloc)


def tries(store, run_id: str) -> list[tuple[int, str]]:
    with store.session() as session:
        return [(t.try_number, t.state) for t in runs.list_tries(session, "tree", run_id)]


def drain_while(
    store, config, act: Callable[[], None], **executor_attributes: float
) -> BaseException | None:
    """Run the scheduler until the run is done while `act` runs in a thread; what `act`
    raised, if anything."""
    executor = get_executor("local", config, store)
    for name, value in executor_attributes.items():
        setattr(executor, name, value)
    failure: list[BaseException] = []

    def run_act() -> None:
        try:
            act()
        except BaseException as exc:  # reported by the test, after the loop ended
            failure.append(exc)

    thread = threading.Thread(target=run_act, daemon=True)
    thread.start()
    Scheduler(store, config, executor).run(drain=True, grace=5)
    thread.join(timeout=60)
    return failure[0] if failure else None


def when_first_try_started(ledger: Ledger, action: Callable[[], None]) -> Callable[[], None]:
    """`action`, once every process of the first try noted its start."""

    def act() -> None:
        wait_for(lambda: ledger.started(1) == ROLES, what="every process of try 1 started")
        action()

    return act


def assert_retried_apart(store, run_id: str, ledger: Ledger) -> None:
    assert tries(store, run_id) == [(1, "up_for_retry"), (2, "success")]
    assert ledger.started(1) == ROLES
    ledger.assert_tries_apart([1, 2])
    assert ledger.running() == set()


OPERATORS = ["bash", "python"]
ISOLATIONS = ["worker", "process"]


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("operator", OPERATORS)
class TestKilledAttempt:
    """SIGKILL of the process running the attempt: its worker, or its own process."""

    def test_the_retry_starts_after_every_process_of_the_killed_try_is_gone(
        self, store, tree_config, tree_dag, ledger, operator, isolation
    ):
        run_id = tree_dag(operator)
        config = tree_config.with_overrides(core__attempt_isolation=isolation)
        killed: list[int] = []

        def kill() -> None:
            pid = task_instance(store, run_id).pid
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        failure = drain_while(store, config, when_first_try_started(ledger, kill))
        assert failure is None, failure
        assert killed
        assert_retried_apart(store, run_id, ledger)

    def test_the_lost_event_comes_once_nothing_of_the_attempt_runs(
        self, store, tree_config, tree_dag, ledger, operator, isolation
    ):
        """The executor alone: when it reports the attempt lost (which fails or retries
        its task instance), not one of the attempt's processes is still running."""
        run_id = tree_dag(operator)
        config = tree_config.with_overrides(core__attempt_isolation=isolation)
        executor = LocalExecutor(config, parallelism=1)
        executor.start()
        try:
            executor.queue([queued_request(store, tree_config, run_id)])
            deadline = time.monotonic() + 45
            while ledger.started(1) != ROLES:
                assert time.monotonic() < deadline, ledger.started(1)
                executor.wait(0.05)
            attempt = task_instance(store, run_id).pid
            os.kill(attempt, signal.SIGKILL)
            events: list = []
            while not events:
                assert time.monotonic() < deadline + 30, "no event"
                executor.wait(0.5)
                events = executor.collect()
            running = ledger.running()
        finally:
            executor.end(grace=0)
        (event,) = events
        assert event.lost and event.pid == attempt and event.exit_code == -9
        assert running == set(), running
        if isolation == "worker":  # the template killed them, and says so
            assert "killed" in event.error and "process(es) it left running" in event.error


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("operator", [*OPERATORS, "python deaf to its timeout"])
class TestTimedOutAttempt:
    """execution_timeout, with children that ignore SIGTERM; a task that ignores its
    timeout too is killed by the executor `hard_timeout_grace` s later."""

    def test_the_retry_starts_after_every_process_of_the_timed_out_try_is_gone(
        self, store, tree_config, tree_dag, ledger, operator, isolation
    ):
        deaf = operator == "python deaf to its timeout"
        run_id = tree_dag(
            "python" if deaf else operator,
            extra="execution_timeout=timedelta(seconds=5)",
            deaf_to_timeout=deaf,
        )
        config = tree_config.with_overrides(core__attempt_isolation=isolation)

        def note_started() -> None:
            wait_for(lambda: ledger.started(1) == ROLES, what="every process of try 1 started")

        failure = drain_while(store, config, note_started, hard_timeout_grace=1.0)
        assert failure is None, failure
        with store.session() as session:
            (first, _second) = runs.list_tries(session, "tree", run_id)
        assert "timed out" in first.error or "execution_timeout" in first.error
        assert_retried_apart(store, run_id, ledger)


@pytest.mark.parametrize(
    ("operator", "isolation"), [("bash", "worker"), ("bash", "process"), ("python", "worker")]
)
class TestZombieAttempt:
    """The attempt's process stops (SIGSTOP), so its heartbeats stop while its children
    run on: the scheduler finds a zombie, the executor stops and then kills it."""

    def test_the_retry_starts_after_every_process_of_the_zombie_is_gone(
        self, store, tree_config, tree_dag, ledger, operator, isolation, monkeypatch
    ):
        monkeypatch.setattr(scheduler_module, "HOUSEKEEPING_INTERVAL", 0.5)
        run_id = tree_dag(operator)
        config = tree_config.with_overrides(
            core__attempt_isolation=isolation, scheduler__heartbeat_timeout=3
        )

        def stop() -> None:
            os.kill(task_instance(store, run_id).pid, signal.SIGSTOP)

        failure = drain_while(store, config, when_first_try_started(ledger, stop), kill_grace=1.0)
        assert failure is None, failure
        with store.session() as session:
            (first, _second) = runs.list_tries(session, "tree", run_id)
        assert "zombie" in first.error
        assert_retried_apart(store, run_id, ledger)


def start_scheduler(env: dict[str, str], *args: str) -> subprocess.Popen:
    return start_cli(
        "scheduler",
        "--no-parse",
        *args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("operator", OPERATORS)
class TestSchedulerShutdown:
    """SIGTERM to `dagwatch scheduler` while the attempt's processes run: once it has
    exited none of them is alive, and the next scheduler's retry overlaps nothing."""

    def test_nothing_of_the_attempt_outlives_the_scheduler(
        self, store, environ, tree_dag, ledger, operator, isolation
    ):
        run_id = tree_dag(operator)
        env = {
            **environ,
            "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
            "DAGWATCH__CORE__ATTEMPT_ISOLATION": isolation,
            "DAGWATCH__SCHEDULER__LOOP_INTERVAL": "0.2",
            "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": store.url.render_as_string(False),
        }
        first = start_scheduler(env, "--grace", "1")
        try:
            wait_for(lambda: ledger.started(1) == ROLES, what="every process of try 1 started")
            first.send_signal(signal.SIGTERM)
            _out, err = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
        assert first.returncode == 0, err
        assert ledger.running() == set()
        second = start_scheduler(env, "--drain")
        _out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        assert_retried_apart(store, run_id, ledger)
