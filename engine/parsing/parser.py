"""The DAG processor: finds DAG files, imports each in an isolated process, stores the result.

A file is imported in a child forked from a warm server process that has already
imported dagwatch, so a file costs a fork, not an interpreter start. A child that
raises, calls `sys.exit`, dies or outlives `core.dag_file_processor_timeout` turns
into an import error for its file; the processor itself never raises for user code.
Unchanged files (same content hash) are not imported again. Finding the files is
`engine.parsing.dag_folder`'s walk; an entry it cannot read is an import error for its path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import Pipe
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import masking
from engine.execution import forkserver
from engine.observability import emit
from engine.parsing.dag_folder import Problem, scan_folders
from engine.sdk.compat import DagwatchDeprecationWarning, check_source
from engine.store.dags import FileParseResult

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.dags import ParseTotals
    from engine.store.db import Store

log = logging.getLogger(__name__)

EXAMPLE_DAGS_FOLDER = Path(__file__).parents[1] / "example_dags"


def _module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return f"dagwatch_dagfile_{digest}_{path.stem}"


def import_dag_file(path: Path) -> list[Any]:
    """Import a DAG file in this process and return the DAGs it defines, validated.

    Used by the parsing child and by the task runner, which imports user code itself.
    """
    from engine.sdk.dag import DAG, pop_autoregistered_dags

    pop_autoregistered_dags()  # forget DAGs built before this file
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    check_source(path)  # Airflow 2 context variables: one warning each per file
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    # Assigned DAGs, and those whose `with` block or `@dag` call ran in this file.
    found = [value for value in vars(module).values() if isinstance(value, DAG)]
    found += [dag for dag in pop_autoregistered_dags() if Path(dag.fileloc) == path]
    dags: dict[str, DAG] = {}
    for dag in found:
        dags.setdefault(dag.dag_id, dag)
    for dag in dags.values():
        dag.fileloc = str(path)
        dag.validate()
    return list(dags.values())


def _parse_in_child(
    path: str, conn: Connection, extra_sys_path: Sequence[str], default_timezone: str = "UTC"
) -> None:
    """Child side: import the file, serialize its DAGs, send them back once."""
    from engine.parsing.serialization import serialize_dag
    from engine.sdk.schedules import set_default_timezone

    set_default_timezone(default_timezone)  # of its naive dates

    for entry in extra_sys_path:
        if entry not in sys.path:
            sys.path.insert(0, entry)
    # Airflow 2 idioms are reported where a person reads: `dags test`/`tasks test`, which
    # import the file themselves, and the task's log; not on every background parse.
    warnings.simplefilter("ignore", DagwatchDeprecationWarning)
    try:
        dags = import_dag_file(Path(path))
        conn.send(("ok", [serialize_dag(dag) for dag in dags]))
    except BaseException as exc:
        text = "".join(traceback.format_exception(exc))
        if isinstance(exc, SystemExit):
            text = f"the file called sys.exit({exc.code!r}) while being imported\n{text}"
        conn.send(("error", masking.redact(text)))  # the secrets the file read are known here
    finally:
        conn.close()


@dataclass
class _Child:
    path: Path
    content_hash: str
    process: forkserver.Child
    conn: Connection
    started: float


def parse_files(
    paths: Iterable[tuple[Path, str]],
    *,
    timeout: float,
    processes: int,
    extra_sys_path: Sequence[str] = (),
    default_timezone: str = "UTC",
) -> list[FileParseResult]:
    """Import each `(path, content_hash)` in its own child, `processes` at a time; naive
    dates in the files are in `default_timezone` (`core.default_timezone`)."""
    pending = list(paths)
    pending.reverse()
    running: dict[Connection, _Child] = {}
    results: list[FileParseResult] = []
    while pending or running:
        while pending and len(running) < processes:
            path, digest = pending.pop()
            reader, writer = Pipe(duplex=False)
            try:
                process = forkserver.start(
                    _parse_in_child, str(path), writer, list(extra_sys_path), default_timezone,
                    name=f"dagwatch-parse-{path.name}",
                )  # fmt: skip
            finally:
                writer.close()
            running[reader] = _Child(path, digest, process, reader, time.monotonic())
        next_deadline = min(child.started + timeout for child in running.values())
        ready = wait(list(running), timeout=max(0.0, next_deadline - time.monotonic()))
        for conn in ready:
            # wait() returns some of the Connections it was given
            results.append(_collect(running.pop(conn)))  # type: ignore[call-overload]
        now = time.monotonic()
        for conn, child in list(running.items()):
            if now - child.started >= timeout:
                del running[conn]
                results.append(_kill_timed_out(child, timeout))
    return results


def _collect(child: _Child) -> FileParseResult:
    duration = time.monotonic() - child.started
    result = FileParseResult(str(child.path), child.content_hash, duration)
    try:
        status, payload = child.conn.recv()
    except (EOFError, OSError):
        child.process.join(5)
        result.error = (
            f"the process importing {child.path} exited with code "
            f"{child.process.exitcode} before reporting its DAGs"
        )
    else:
        if status == "ok":
            result.dags = payload
        else:
            result.error = payload
    finally:
        child.conn.close()
    child.process.join(5)
    if child.process.is_alive():
        child.process.kill()
        child.process.join()
    return result


def _kill_timed_out(child: _Child, timeout: float) -> FileParseResult:
    child.process.kill()
    child.process.join()
    child.conn.close()
    return FileParseResult(
        str(child.path),
        child.content_hash,
        time.monotonic() - child.started,
        error=(
            f"importing {child.path} took longer than {timeout:g} s "
            "(core.dag_file_processor_timeout) and was stopped"
        ),
        timed_out=True,
    )


@dataclass
class ProcessorReport:
    """What one pass over the DAG folders did, and what the metastore holds after it."""

    files_seen: int
    files_parsed: int
    #: DAGs in the files imported by this pass
    dags_found: int
    #: files that failed to import and bad entries met by this pass
    import_errors: int
    duration: float
    results: list[FileParseResult]
    #: active DAGs, DAG files and import errors on record after the pass
    totals: ParseTotals
    #: bad entries of the DAG folders (import errors and warnings), each with its path
    problems: list[Problem] = field(default_factory=list)


def dag_folders(config: Config) -> list[Path]:
    folders = [Path(config["core.dags_folder"])]
    if config["core.load_examples"]:
        folders.append(EXAMPLE_DAGS_FOLDER)
    return folders


def process_folders(
    store: Store,
    config: Config,
    *,
    force: bool = False,
    now: datetime | None = None,
) -> ProcessorReport:
    """Scan the configured folders, import new or changed files, record everything."""
    from engine.store import dags as dag_store

    started = time.monotonic()
    folders = dag_folders(config)
    scan = scan_folders(folders)
    entry_errors = {problem.path: problem.reason for problem in scan.errors}
    with store.session() as session:
        known = dag_store.get_file_hashes(session)
        known_errors = dag_store.get_import_errors(session, entry_errors)
    todo = [
        (path, digest)
        for path, digest in scan.files.items()
        if force or known.get(str(path)) != digest
    ]
    results = parse_files(
        todo,
        timeout=config["core.dag_file_processor_timeout"],
        processes=config["core.parsing_processes"],
        extra_sys_path=[str(folder) for folder in folders if os.path.isdir(folder)],
        default_timezone=config["core.default_timezone"],
    )
    now = now or datetime.now(UTC)
    with store.session() as session:
        dag_store.record_parse_results(
            session, results, now=now, paused_at_creation=config["core.dags_are_paused_at_creation"]
        )
        dag_store.record_entry_errors(
            session,
            {p: why for p, why in entry_errors.items() if force or known_errors.get(p) != why},
            now=now,
        )
        present = {str(path) for path in scan.files} | set(entry_errors)
        dag_store.forget_missing_files(session, present=present)
        totals = dag_store.parse_totals(session)
        durations = dag_store.get_parse_durations(session)
    report = ProcessorReport(
        files_seen=len(scan.files),
        files_parsed=len(results),
        dags_found=sum(len(result.dags) for result in results),
        import_errors=sum(1 for result in results if result.error) + len(entry_errors),
        duration=time.monotonic() - started,
        results=results,
        problems=scan.problems,
        totals=totals,
    )
    emit.parse_pass(report.duration, results, folders, durations)
    log.debug(
        "processed DAG files",
        extra={
            "action": "process_dag_files",
            "files_seen": report.files_seen,
            "files_parsed": report.files_parsed,
            "import_errors": report.import_errors,
            "duration": report.duration,
        },
    )
    return report
