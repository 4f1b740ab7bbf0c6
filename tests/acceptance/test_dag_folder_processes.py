"""`dagwatch scheduler`, `dag-processor` and `standalone` on a DAG folder full of bad
entries, and a scheduler whose internal thread dies: real processes, real metastores.

The good DAGs are parsed and run, each bad entry is reported with its path, the process
lives on; when one of its own threads dies, it exits with code 1 and the reason.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.store.models import DagRun
from tests.helpers import run_cli, start_cli

GOOD = """
import pendulum
from engine import DAG, EmptyOperator

with DAG("{dag_id}", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")
"""
EIO_FILE = Path("/proc/self/mem")  # a regular file whose every read fails with EIO
IS_ROOT = os.geteuid() == 0


def write_dag(path: Path, dag_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(GOOD.format(dag_id=dag_id)))


def hostile_folder(tmp_path: Path) -> tuple[Path, dict[str, str], list[str]]:
    """A DAG folder with 3 good DAGs among bad entries: (folder, bad path -> words of
    its import error, paths reported as warnings)."""
    dags, outside = tmp_path / "dags", tmp_path / "outside"
    write_dag(dags / "good_a.py", "good_a")
    write_dag(dags / "sub" / "good_b.py", "good_b")
    write_dag(outside / "good_outside.py", "good_outside")
    (outside / "back").symlink_to(dags)  # a cycle through the folder outside
    (dags / "outside").symlink_to(outside)
    (dags / "outside_again").symlink_to(outside)
    (dags / "sub" / "up").symlink_to("..")
    (dags / "package.py").mkdir()  # a folder named like a DAG file
    (dags / "dangling.py").symlink_to("missing.py")
    (dags / "loop.py").symlink_to("loop.py")
    os.mkfifo(dags / "pipe.py")
    errors = {
        str(dags / "dangling.py"): "broken symbolic link",
        str(dags / "loop.py"): "symbolic link loop",
        str(dags / "pipe.py"): "a FIFO",
    }
    if EIO_FILE.exists():
        (dags / "eio.py").symlink_to(EIO_FILE)
        errors[str(dags / "eio.py")] = "Input/output error"
    if not IS_ROOT:  # root reads whatever the mode says (see test_dag_folder.py)
        write_dag(dags / "secret.py", "secret")
        (dags / "secret.py").chmod(0)
        write_dag(dags / "locked" / "hidden.py", "hidden")
        (dags / "locked").chmod(0)
        errors[str(dags / "secret.py")] = "Permission denied"
        errors[str(dags / "locked")] = "Permission denied"
    warnings = [str(dags / "sub" / "up"), str(dags / "outside" / "back")]
    return dags, errors, warnings


GOOD_DAGS = {"good_a", "good_b", "good_outside"}


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], list[str]]]:
    if IS_ROOT:
        print("running as root: unreadable-by-mode entries are left to the unprivileged walk test")
    found = hostile_folder(tmp_path)
    yield found
    for root, dirs, _ in os.walk(tmp_path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)  # so pytest can remove it


@pytest.fixture
def process_env(environ, store, hostile) -> dict[str, str]:
    dags, _, _ = hostile
    env = dict(environ)
    env.update(
        PYTHONUNBUFFERED="1",
        DAGWATCH__CORE__DAGS_FOLDER=str(dags),
        DAGWATCH__CORE__LOAD_EXAMPLES="false",
        DAGWATCH__CORE__DAGS_ARE_PAUSED_AT_CREATION="false",
        DAGWATCH__SCHEDULER__LOOP_INTERVAL="0.2",
        DAGWATCH__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="0.5",
        DAGWATCH__LOGGING__LEVEL="INFO",
        DAGWATCH__DATABASE__SQL_ALCHEMY_CONN=store.engine.url.render_as_string(False),
    )
    return env


class Process:
    """A dagwatch command in the background, its output in files (a pipe could fill)."""

    def __init__(
        self, start: Callable[..., subprocess.Popen], env: dict[str, str], folder: Path
    ) -> None:
        self.out, self.err = folder / "stdout", folder / "stderr"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.popen = start(env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, text=True)

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def stop(self, timeout: float = 60) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise


@contextmanager
def dagwatch(verb: str, env: dict[str, str], folder: Path, *prefix: str) -> Iterator[Process]:
    folder.mkdir(parents=True, exist_ok=True)
    if prefix:  # a script of the test's own
        start = partial(subprocess.Popen, [sys.executable, *prefix, verb])
    else:
        start = partial(start_cli, verb)
    process = Process(start, env, folder)
    try:
        yield process
    finally:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait()


def wait_for(condition: Callable[[], object], what: str, process: Process, timeout=60) -> None:
    """Poll until `condition` is true; fail early, with its output, if the process ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.popen.poll() is not None:
            pytest.fail(f"exited {process.popen.returncode} before {what}:\n{process.stderr}")
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {timeout} s\n{process.stderr}")


def import_errors(env: dict[str, str]) -> dict[str, str]:
    result = run_cli("dags", "list-import-errors", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    return {row["filename"]: row["error"] for row in json.loads(result.stdout)}


def dag_ids(env: dict[str, str]) -> set[str]:
    result = run_cli("dags", "list", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    return {row["dag_id"] for row in json.loads(result.stdout)}


def reported(errors: dict[str, str], expected: dict[str, str]) -> bool:
    return set(errors) == set(expected) and all(
        words in errors[path] for path, words in expected.items()
    )


def successful_dags(store) -> set[str]:
    with store.session() as session:
        return set(
            session.execute(select(DagRun.dag_id).where(DagRun.state == "success")).scalars()
        )


def test_scheduler_runs_the_good_dags_reports_each_bad_entry_and_lives(
    store, hostile, process_env, tmp_path
):
    dags, errors, warnings = hostile
    with dagwatch("scheduler", process_env, tmp_path / "scheduler") as scheduler:
        wait_for(lambda: successful_dags(store) >= GOOD_DAGS, "runs of the good DAGs", scheduler)
        wait_for(lambda: reported(import_errors(process_env), errors), "import errors", scheduler)
        write_dag(dags / "sub" / "late.py", "late")  # the processor thread still parses
        wait_for(lambda: "late" in successful_dags(store), "a run of a new DAG", scheduler)
        assert scheduler.stop() == 0, scheduler.stderr
    stderr = scheduler.stderr
    for path in [*errors, *warnings]:
        assert stderr.count(f"DAG folder entry {path}:") == 1, (path, stderr)  # once, not per pass
    assert "Traceback" not in stderr and "CRITICAL" not in stderr
    assert dag_ids(process_env) == GOOD_DAGS | {"late"}


def test_dag_processor_lives_through_files_appearing_and_vanishing(
    store, hostile, process_env, tmp_path
):
    dags, errors, _ = hostile
    stop = threading.Event()

    def churn() -> None:
        index = 0
        while not stop.is_set():
            index += 1
            flash = dags / "sub" / f"flash_{index % 5}.py"
            try:
                write_dag(flash, f"flash_{index % 5}")
                time.sleep(0.01)
                flash.unlink()
            except OSError:
                pass

    with dagwatch("dag-processor", process_env, tmp_path / "processor") as processor:
        wait_for(lambda: dag_ids(process_env) >= GOOD_DAGS, "the good DAGs", processor)
        thread = threading.Thread(target=churn, daemon=True)
        thread.start()
        try:
            passes = processor.stderr.count("DAG files in")
            wait_for(
                lambda: processor.stderr.count("DAG files in") >= passes + 5,
                "five passes among vanishing files",
                processor,
            )
        finally:
            stop.set()
            thread.join(10)
        wait_for(lambda: reported(import_errors(process_env), errors), "import errors", processor)
        assert processor.stop() == 0, processor.stderr
    assert "Traceback" not in processor.stderr


STARTUP = re.compile(r"loaded (\d+) DAGs from (\d+) files \((\d+) import errors\)")


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        body = response.read().decode()
    return {
        name: float(value)
        for name, value in re.findall(r"^(dagwatch_\w+) ([\d.e+-]+)$", body, flags=re.M)
    }


def test_standalone_startup_line_tells_what_is_on_record_every_start(
    store, hostile, process_env, tmp_path
):
    _, errors, warnings = hostile
    env = {
        **process_env,
        "DAGWATCH__METRICS__PROMETHEUS_ON": "true",
        "DAGWATCH__METRICS__PROMETHEUS_PORT": "0",
    }
    lines = []
    for start in ("first", "second"):  # the second start finds every file unchanged
        with dagwatch("standalone", env, tmp_path / start) as standalone:
            wait_for(lambda: "metrics: " in standalone.stdout, "the metrics line", standalone)
            line = STARTUP.search(standalone.stdout)
            assert line, standalone.stdout
            url = re.search(r"metrics: (\S+)/metrics", standalone.stdout).group(1)

            def gauges_ready() -> bool:
                return "dagwatch_dag_processing_import_errors" in scrape(url)  # noqa: B023

            wait_for(gauges_ready, "the import error gauge", standalone)
            samples = scrape(url)
            entries = [f"DAG folder entry {path}:" for path in [*errors, *warnings]]
            wait_for(
                lambda: all(e in standalone.stderr for e in entries),  # noqa: B023
                "each bad entry logged",
                standalone,
            )
            assert standalone.stop() == 0, standalone.stderr
        assert all(standalone.stderr.count(entry) == 1 for entry in entries), standalone.stderr
        dags, files, errors_on_record = map(int, line.groups())
        assert (dags, files, errors_on_record) == (len(GOOD_DAGS), len(GOOD_DAGS), len(errors))
        assert samples["dagwatch_dag_processing_import_errors"] == errors_on_record
        assert samples["dagwatch_dagbag_size"] == dags
        assert len(import_errors(env)) == errors_on_record
        lines.append(line.group(0))
    assert lines[0] == lines[1]


# -- an internal thread that dies stops the process with exit code 1 and the reason ----

DYING_PLUGIN = '''
import threading


class DyingService:
    """A side task whose thread dies at once, before start() has even returned."""

    name = "dying"

    def __init__(self, config, store):
        self.started = threading.Event()

    def start(self):
        def run():
            self.started.set()
            raise RuntimeError("the side task lost its metastore handle")

        thread = threading.Thread(target=run, daemon=True)  # a plugin's own, unnamed thread
        thread.start()
        self.started.wait(10)

    def stop(self, timeout):
        pass


def register(registry, config):
    registry.add_service(DyingService)
'''


def install_plugin(folder: Path) -> Path:
    """A real third-party plugin: a module plus its dist-info entry point, on PYTHONPATH."""
    folder.mkdir(parents=True)
    (folder / "dying_plugin.py").write_text(DYING_PLUGIN)
    info = folder / "dying_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dying-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dagwatch.plugins]\ndying = dying_plugin\n")
    return folder


def assert_one_line_reason(process: Process, reason: str) -> None:
    assert process.popen.wait(60) == 1, process.stderr
    stderr = process.stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and reason in errors[0], stderr
    assert "Traceback" not in stderr, stderr


def test_a_dying_side_task_thread_stops_the_scheduler_with_exit_code_1(
    store, process_env, tmp_path
):
    plugins = install_plugin(tmp_path / "plugins")
    env = {**process_env, "PYTHONPATH": str(plugins)}
    with dagwatch("scheduler", env, tmp_path / "scheduler") as scheduler:
        assert_one_line_reason(
            scheduler, "thread died: RuntimeError: the side task lost its metastore handle"
        )
    assert "scheduler stopped" in scheduler.stdout  # it stopped cleanly, then said why


#: Runs the real CLI with one fault injected: the DAG processor's pass raises.
FAULTY_PROCESSOR = """
import sys
import engine.parsing.dag_processor

def broken_pass(store, config, **kwargs):
    raise KeyError("a bug in the DAG processor")

engine.parsing.dag_processor.process_folders = broken_pass
from engine.cli import main
sys.argv[0] = "dagwatch"
main()
"""


@pytest.mark.parametrize(
    ("verb", "reason"),
    [
        ("scheduler", "the dagwatch-dag-processor thread died: KeyError: 'a bug in the DAG"),
        ("dag-processor", "the dag-processor thread died: KeyError: 'a bug in the DAG"),
    ],
)
def test_a_dying_dag_processor_exits_1_with_the_reason(store, process_env, tmp_path, verb, reason):
    with dagwatch(verb, process_env, tmp_path / verb, "-c", FAULTY_PROCESSOR) as process:
        assert_one_line_reason(process, reason)
