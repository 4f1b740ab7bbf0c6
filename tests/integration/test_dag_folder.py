"""Walking a DAG folder full of bad entries, and what the processor records for them.

Every case is a real entry on the filesystem: broken and looping links, a folder loop,
links to a folder outside, FIFOs, a file whose read fails, files and folders that
cannot be read by the processor's user, files that vanish while the folder is walked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.observability.collector import metastore_source
from engine.parsing.dag_folder import FolderScan, VanishedFile, read_dag_file, scan_folders
from engine.parsing.parser import process_folders
from engine.store import dags as dag_store

GOOD = """
import pendulum
from engine import DAG, EmptyOperator

with DAG("{dag_id}", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")
"""
#: a regular file whose every read fails with EIO (address 0 of the reader's memory)
EIO_FILE = Path("/proc/self/mem")


def write_dag(path: Path, dag_id: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(GOOD.format(dag_id=dag_id)))
    return path


def scan(folder: Path, timeout: float = 30) -> FolderScan:
    """Scan in a thread, so a walk that blocks fails the test instead of hanging it."""
    found: list[FolderScan | BaseException] = []

    def walk() -> None:
        try:
            found.append(scan_folders([folder]))
        except BaseException as exc:
            found.append(exc)

    thread = threading.Thread(target=walk, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"walking {folder} blocked for {timeout} s"
    if isinstance(found[0], BaseException):
        raise found[0]
    return found[0]


def reasons(result: FolderScan) -> dict[str, str]:
    return {problem.path: problem.reason for problem in result.problems}


@pytest.fixture
def dags(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    write_dag(folder / "good.py", "good")
    return folder


# -- one bad entry at a time: it is reported with its path, the good file is found ----


def _link(path: Path, target: Path) -> list[Path]:
    path.symlink_to(target)
    return [path]


def _ring(dags: Path) -> list[Path]:
    _link(dags / "ring_b.py", dags / "ring_a.py")
    _link(dags / "ring_a.py", dags / "ring_b.py")
    return [dags / "ring_a.py", dags / "ring_b.py"]


def _fifo(path: Path) -> list[Path]:
    os.mkfifo(path)
    return [path]


#: case -> (make the bad entries in a folder, returning their paths; words of the reason)
BAD_ENTRIES: dict[str, tuple[Callable[[Path], list[Path]], str]] = {
    "dangling symlink": (
        lambda d: _link(d / "dangling.py", d / "missing.py"),
        "broken symbolic link (its target",
    ),
    "symlink to itself": (lambda d: _link(d / "self.py", d / "self.py"), "symbolic link loop"),
    "two links in a ring": (_ring, "symbolic link loop"),
    "FIFO named .py": (lambda d: _fifo(d / "pipe.py"), "a FIFO"),
    "link to a FIFO": (
        lambda d: (_fifo(d / "pipe"), _link(d / "via_link.py", d / "pipe"))[1],
        "a FIFO",
    ),
    "link to a character device": (
        lambda d: _link(d / "zero.py", Path("/dev/zero")),
        "a character device",
    ),
    "file whose read fails (EIO)": (
        lambda d: _link(d / "eio.py", EIO_FILE) if EIO_FILE.exists() else [],
        "cannot be read: Input/output error",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
def test_a_bad_entry_is_reported_with_its_path_and_the_rest_is_found(dags, case):
    if case.startswith("file whose read fails") and not EIO_FILE.exists():
        pytest.skip(f"{EIO_FILE} is Linux-only")
    make, expected = BAD_ENTRIES[case]
    bad = make(dags)
    result = scan(dags)
    assert list(result.files) == [(dags / "good.py").resolve()]
    assert [problem.path for problem in result.problems] == [str(path) for path in bad]
    assert all(expected in problem.reason and problem.is_error for problem in result.problems)


def test_a_folder_loop_is_walked_once_and_reported_as_a_warning(dags):
    write_dag(dags / "sub" / "deeper.py", "deeper")
    (dags / "sub" / "up").symlink_to("..")
    (dags / "sub" / "here").symlink_to(".")
    (dags / "self").symlink_to(dags)
    result = scan(dags)
    assert sorted(path.name for path in result.files) == ["deeper.py", "good.py"]
    assert not result.errors
    loops = reasons(result)
    assert sorted(loops) == sorted(str(dags / p) for p in ("self", "sub/up", "sub/here"))
    assert all("(a loop)" in reason for reason in loops.values())


def test_a_link_to_a_folder_outside_is_followed_once_never_cyclically(tmp_path, dags):
    outside = tmp_path / "shared"
    write_dag(outside / "shared_dag.py", "shared")
    (outside / "back_to_dags").symlink_to(dags)  # from outside, back into the DAG folder
    (outside / "back_to_itself").symlink_to(outside)
    (dags / "shared").symlink_to(outside)
    (dags / "shared_again").symlink_to(outside)
    result = scan(dags)
    assert sorted(result.files) == sorted([(dags / "good.py").resolve(), outside / "shared_dag.py"])
    assert sorted(reasons(result)) == [
        str(dags / "shared" / "back_to_dags"),
        str(dags / "shared" / "back_to_itself"),
    ]
    assert not result.errors  # loops skip nothing, so they are warnings, not import errors


def test_a_py_named_folder_is_walked_like_any_folder(dags):
    write_dag(dags / "package.py" / "inner.py", "inner")
    result = scan(dags)
    assert sorted(path.name for path in result.files) == ["good.py", "inner.py"]
    assert result.problems == []


def test_hidden_entries_and_files_without_dag_words_are_not_read(dags):
    os.mkfifo(dags / ".hidden.py")  # reading it would block: it is never opened
    (dags / "__pycache__").mkdir()
    os.mkfifo(dags / "__pycache__" / "cached.py")
    (dags / "helpers.py").write_text("def helper():\n    return 1\n")
    result = scan(dags)
    assert list(result.files) == [(dags / "good.py").resolve()] and result.problems == []


def test_many_bad_entries_at_once_are_each_reported(dags):
    bad = [path for make, _ in BAD_ENTRIES.values() for path in make(dags)]
    (dags / "sub").mkdir()
    (dags / "sub" / "up").symlink_to("..")
    for index in range(20):
        write_dag(dags / "sub" / f"dag_{index}.py", f"dag_{index}")
    result = scan(dags)
    assert len(result.files) == 21  # each file once, whatever the loop
    assert sorted(problem.path for problem in result.errors) == sorted(str(p) for p in bad)
    assert [problem.path for problem in result.warnings] == [str(dags / "sub" / "up")]


def _deep_folder(dags: Path) -> Path:
    """A folder whose DAG file's path is longer than the metastore holds."""
    deep = dags.joinpath(*["d" * 200] * 5)
    write_dag(deep / "deep.py", "deep")
    return deep


def test_names_the_metastore_cannot_hold_are_warnings_and_skipped(dags):
    bad_name = os.fsdecode(b"caf\xe9.py")  # Latin-1 bytes: not valid UTF-8
    write_dag(dags / bad_name, "latin")
    write_dag(dags / os.fsdecode(b"dir\xff") / "inside.py", "inside")
    deep = _deep_folder(dags)
    result = scan(dags)
    assert list(result.files) == [(dags / "good.py").resolve()]
    assert not result.errors
    assert sorted(problem.path for problem in result.warnings) == sorted(
        [str(dags / "caf\\xe9.py"), str(dags / "dir\\xff"), str(deep / "deep.py")]
    )


# -- files and folders that vanish while the folder is walked -------------------------


def test_a_vanished_file_is_nothing_to_report(dags):
    gone = dags / "gone.py"
    with pytest.raises(VanishedFile):
        read_dag_file(gone)


def test_entries_created_and_deleted_during_walks_never_break_them(dags):
    stop = threading.Event()

    def churn() -> None:
        index = 0
        while not stop.is_set():
            index += 1
            folder = dags / f"churn_{index % 7}"
            try:
                write_dag(folder / f"c{index}.py", f"churn_{index}")
                (dags / f"flash_{index}.py").write_text("from engine import DAG\n")
                (dags / f"flash_{index}.py").unlink()
                shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                pass  # the other side of the race: what matters is the walk

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        walks, deadline = 0, time.monotonic() + 3
        while time.monotonic() < deadline or walks < 50:
            result = scan(dags)
            walks += 1
            assert (dags / "good.py").resolve() in result.files
            assert result.problems == [], result.problems
    finally:
        stop.set()
        thread.join(10)


# -- permissions: entries the processor's user cannot read ---------------------------


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder any user can enter (the test's own tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="dagwatch-perm-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for root, dirs, _ in os.walk(path):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        shutil.rmtree(path, ignore_errors=True)


def _scan_as_unprivileged(folder: Path) -> dict:
    """Scan as the current user, or as `nobody` in a forked child when running as root
    (root reads anything, whatever its mode)."""
    if os.geteuid() != 0:
        result = scan(folder)
        return {"files": [str(p) for p in result.files], "problems": reasons(result)}
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, walk, report, leave without cleanup
        code = 1
        try:
            os.close(reader)
            os.setgid(65534)
            os.setuid(65534)
            result = scan_folders([folder])
            payload = {"files": [str(p) for p in result.files], "problems": reasons(result)}
            os.write(writer, json.dumps(payload).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged walk failed"
    return json.loads(data)


def test_an_unreadable_file_and_folder_are_reported_and_the_rest_is_found(shared_tmp):
    dags = shared_tmp / "dags"
    write_dag(dags / "good.py", "good")
    secret = write_dag(dags / "secret.py", "secret")
    secret.chmod(0o000)
    write_dag(dags / "locked" / "inside.py", "inside")
    (dags / "locked").chmod(0o000)
    dags.chmod(0o755)
    found = _scan_as_unprivileged(dags)
    assert found["files"] == [str(dags / "good.py")]
    assert found["problems"] == {
        str(secret): "cannot be read: Permission denied",
        str(dags / "locked"): "folder cannot be listed (Permission denied): "
        "its DAG files are not loaded",
    }


# -- what the processor records: import errors, numbers, recovery ---------------------


@pytest.fixture
def proc_config(config, dags):
    return config.with_overrides(
        core__load_examples=False, core__dag_file_processor_timeout=10, core__dags_folder=str(dags)
    )


def _errors(store) -> dict[str, str]:
    with store.session() as session:
        return {row.filename: row.stacktrace for row in dag_store.list_import_errors(session)}


def _samples(store, config) -> dict[str, float]:
    return {
        sample.name: sample.value
        for sample in metastore_source(store, config)()
        if not sample.labels and sample.name in {"dag_processing.import_errors", "dagbag_size"}
    }


def test_bad_entries_are_import_errors_and_every_report_agrees(store, proc_config, dags):
    (dags / "dangling.py").symlink_to("missing.py")
    os.mkfifo(dags / "pipe.py")
    (dags / "broken.py").write_text("from engine import DAG\nraise ValueError('on purpose')\n")
    (dags / "sub").mkdir()
    (dags / "sub" / "up").symlink_to("..")
    write_dag(dags / "sub" / "other.py", "other")
    report = process_folders(store, proc_config)
    errors = _errors(store)
    assert sorted(errors) == sorted(str(dags / n) for n in ("broken.py", "dangling.py", "pipe.py"))
    assert "broken symbolic link" in errors[str(dags / "dangling.py")]
    assert [p.path for p in report.problems if not p.is_error] == [str(dags / "sub" / "up")]
    assert (report.totals.dags, report.totals.files, report.totals.import_errors) == (2, 3, 3)
    assert _samples(store, proc_config) == {"dag_processing.import_errors": 3, "dagbag_size": 2}

    again = process_folders(store, proc_config)  # nothing changed: nothing parsed
    assert again.files_parsed == 0 and again.totals == report.totals
    assert _errors(store) == errors


def test_names_the_metastore_cannot_hold_never_fail_a_pass(store, proc_config, dags):
    write_dag(dags / os.fsdecode(b"caf\xe9.py"), "latin")
    _deep_folder(dags)
    (_deep_folder(dags) / "dangling.py").symlink_to("missing.py")  # an error too long to store
    report = process_folders(store, proc_config)
    assert report.totals.dags == 1 and report.totals.import_errors == 0
    assert len(report.problems) == 3 and not any(problem.is_error for problem in report.problems)


def test_an_entry_error_is_written_once_and_cleared_when_fixed(store, proc_config, dags):
    (dags / "late.py").symlink_to("late_target.py")
    process_folders(store, proc_config)
    with store.session() as session:
        first = {row.filename: row.timestamp for row in dag_store.list_import_errors(session)}
    process_folders(store, proc_config)
    with store.session() as session:
        second = {row.filename: row.timestamp for row in dag_store.list_import_errors(session)}
    assert second == first  # not rewritten on every pass
    write_dag(dags / "late_target.py", "late")
    report = process_folders(store, proc_config)
    assert _errors(store) == {} and report.totals.dags == 2  # good and late (one file, 2 paths)


def test_a_known_file_that_turns_unreadable_keeps_its_dags_until_it_reads_again(
    store, proc_config, dags
):
    good = dags / "good.py"
    content = good.read_text()
    process_folders(store, proc_config)
    good.unlink()
    os.mkfifo(good)
    report = process_folders(store, proc_config)
    assert "a FIFO" in _errors(store)[str(good)]
    assert report.totals.dags == 1  # the last good DAG keeps running
    good.unlink()
    good.write_text(content)  # the same content as when it was last parsed
    report = process_folders(store, proc_config)
    assert report.files_parsed == 1 and _errors(store) == {}
    with store.session() as session:
        row = next(f for f in dag_store.list_dag_files(session) if f.fileloc == str(good))
    assert not row.has_import_error
    assert row.content_hash == hashlib.sha256(good.read_bytes()).hexdigest()


def test_a_dags_folder_that_is_a_looping_link_is_one_import_error(store, config, tmp_path):
    looping = tmp_path / "looping_dags"
    looping.symlink_to(looping)
    loop_config = config.with_overrides(core__load_examples=False, core__dags_folder=str(looping))
    report = process_folders(store, loop_config)
    assert _errors(store) == {str(looping): "symbolic link loop (resolving the link never ends)"}
    assert (report.totals.dags, report.totals.import_errors) == (0, 1)
    assert _samples(store, loop_config)["dag_processing.import_errors"] == 1
