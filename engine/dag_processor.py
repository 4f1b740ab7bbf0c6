"""The DAG processor loop: parse the DAG folders every `min_file_process_interval`.

Runs as a side thread of the scheduler, or alone as `dagwatch dag-processor`. A pass
only imports files whose content changed, so an idle pass costs a hash per file.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from engine.exceptions import StoreError
from engine.processor import ProcessorReport, process_folders
from engine.store import scheduling

log = logging.getLogger(__name__)


def run_dag_processor(store: Any, config: Any, stop: threading.Event) -> None:
    """Parse, then wait for the interval (or `stop`), until `stop` is set.

    The processor is a `dag_processor` job whose heartbeat is each pass (with its
    duration), so the console and operators can see that it is alive.
    """
    interval = config["scheduler.min_file_process_interval"]
    job_id = _start_job(store)
    try:
        while not stop.is_set():
            try:
                report: ProcessorReport = process_folders(store, config)
            except (SQLAlchemyError, StoreError) as exc:
                log.error("DAG processing pass failed, retrying: %s", exc)
            else:
                _beat(store, job_id, report.duration)
                if report.files_parsed:
                    log.info(
                        "parsed %d of %d DAG files in %.2f s (%d import errors)",
                        report.files_parsed,
                        report.files_seen,
                        report.duration,
                        report.import_errors,
                    )
            stop.wait(interval)
    finally:
        _end_job(store, job_id)


def _start_job(store: Any) -> int | None:
    try:
        with store.session() as session:
            return scheduling.start_job(session, "dag_processor", os.getpid(), datetime.now(UTC))
    except (SQLAlchemyError, StoreError) as exc:  # the heartbeat is a report, not a must
        log.warning("could not register the DAG processor job: %s", exc)
        return None


def _beat(store: Any, job_id: int | None, duration: float) -> None:
    if job_id is None:
        return
    try:
        with store.session() as session:
            scheduling.heartbeat_job(session, job_id, datetime.now(UTC), last_loop_seconds=duration)
    except (SQLAlchemyError, StoreError) as exc:
        log.warning("DAG processor heartbeat failed: %s", exc)


def _end_job(store: Any, job_id: int | None) -> None:
    if job_id is None:
        return
    try:
        with store.session() as session:
            scheduling.end_job(session, job_id, "success", datetime.now(UTC))
    except (SQLAlchemyError, StoreError) as exc:
        log.warning("could not end the DAG processor job: %s", exc)


def start_dag_processor_thread(store: Any, config: Any, stop: threading.Event) -> threading.Thread:
    """The processor as a daemon thread; if it dies, it stops the scheduler with it."""

    def guarded() -> None:
        try:
            run_dag_processor(store, config, stop)
        except BaseException:
            log.critical("the DAG processor thread died; stopping", exc_info=True)
            stop.set()
            raise

    thread = threading.Thread(target=guarded, name="dag-processor", daemon=True)
    thread.start()
    return thread
