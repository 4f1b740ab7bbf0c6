"""The DAG processor loop: parse the DAG folders every `min_file_process_interval`.

Runs as a side thread of the scheduler, or alone as `dagwatch dag-processor`. A pass
only imports files whose content changed, so an idle pass costs a hash per file.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from engine.exceptions import StoreError
from engine.processor import ProcessorReport, process_folders

log = logging.getLogger(__name__)


def run_dag_processor(store: Any, config: Any, stop: threading.Event) -> None:
    """Parse, then wait for the interval (or `stop`), until `stop` is set."""
    interval = config["scheduler.min_file_process_interval"]
    while not stop.is_set():
        try:
            report: ProcessorReport = process_folders(store, config)
        except (SQLAlchemyError, StoreError) as exc:
            log.error("DAG processing pass failed, retrying: %s", exc)
        else:
            if report.files_parsed:
                log.info(
                    "parsed %d of %d DAG files in %.2f s (%d import errors)",
                    report.files_parsed,
                    report.files_seen,
                    report.duration,
                    report.import_errors,
                )
        stop.wait(interval)


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
