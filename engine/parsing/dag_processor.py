"""The DAG processor loop: parse the DAG folders every `min_file_process_interval`.

Runs as a side thread of the scheduler, or alone as `dagwatch dag-processor`. A pass
only imports files whose content changed, so an idle pass costs a read per file. Bad
entries of the folders (broken links, loops, unreadable files) are logged once each,
with their path, and never stop the loop; if the thread dies anyway, the process's
`engine.supervision.ThreadWatch` stops the scheduler with the reason.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from engine.exceptions import StoreError
from engine.parsing.dag_folder import Problem
from engine.parsing.parser import ProcessorReport, process_folders
from engine.store import scheduling

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.db import Store

log = logging.getLogger(__name__)

#: Name of the processor's thread inside the scheduler (internal: its death stops it).
THREAD_NAME = "dagwatch-dag-processor"


def log_new_problems(problems: list[Problem], reported: set[Problem]) -> None:
    """Log each bad entry once while it lasts (`reported` carries over between passes)."""
    for problem in problems:
        if problem not in reported:
            kind = " (recorded as an import error)" if problem.is_error else ""
            log.warning("DAG folder entry %s%s", problem, kind)
    reported.clear()
    reported.update(problems)


def describe_pass(report: ProcessorReport) -> str:
    """One line: what the pass did and what is on record after it."""
    totals = report.totals
    return (
        f"parsed {report.files_parsed} of {report.files_seen} DAG files in "
        f"{report.duration:.2f} s; on record: {totals.dags} DAGs, {totals.files} files, "
        f"{totals.import_errors} import errors"
    )


def run_dag_processor(store: Store, config: Config, stop: threading.Event) -> None:
    """Parse, then wait for the interval (or `stop`), until `stop` is set.

    The processor is a `dag_processor` job whose heartbeat is each pass (with its
    duration), so the console and operators can see that it is alive.
    """
    interval = config["scheduler.min_file_process_interval"]
    job_id = _start_job(store)
    reported: set[Problem] = set()
    try:
        while not stop.is_set():
            try:
                report: ProcessorReport = process_folders(store, config)
            except (SQLAlchemyError, StoreError, OSError) as exc:
                # The metastore is away, or the system refused a fork or a file handle.
                log.error("DAG processing pass failed, retrying: %s", exc)
            else:
                _beat(store, job_id, report.duration)
                log_new_problems(report.problems, reported)
                if report.files_parsed:
                    log.info("%s", describe_pass(report))
            stop.wait(interval)
    finally:
        _end_job(store, job_id)


def _start_job(store: Store) -> int | None:
    try:
        with store.session() as session:
            return scheduling.start_job(session, "dag_processor", os.getpid(), datetime.now(UTC))
    except (SQLAlchemyError, StoreError) as exc:  # the heartbeat is a report, not a must
        log.warning("could not register the DAG processor job: %s", exc)
        return None


def _beat(store: Store, job_id: int | None, duration: float) -> None:
    if job_id is None:
        return
    try:
        with store.session() as session:
            scheduling.heartbeat_job(session, job_id, datetime.now(UTC), last_loop_seconds=duration)
    except (SQLAlchemyError, StoreError) as exc:
        log.warning("DAG processor heartbeat failed: %s", exc)


def _end_job(store: Store, job_id: int | None) -> None:
    if job_id is None:
        return
    try:
        with store.session() as session:
            scheduling.end_job(session, job_id, "success", datetime.now(UTC))
    except (SQLAlchemyError, StoreError) as exc:
        log.warning("could not end the DAG processor job: %s", exc)


def start_dag_processor_thread(
    store: Store, config: Config, stop: threading.Event
) -> threading.Thread:
    """The processor as a daemon thread named THREAD_NAME (see the module doc)."""
    thread = threading.Thread(
        target=run_dag_processor, args=(store, config, stop), name=THREAD_NAME, daemon=True
    )
    thread.start()
    return thread
