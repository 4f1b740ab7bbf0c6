"""Health checks behind the scheduler's `GET /health` (`metrics.server.MetricsServer`).

`install_health_checks` adds four checks; the endpoint answers 200 when all pass and 503
otherwise, with every check's detail in the JSON body, so a probe and a person both see
why. A check that cannot reach the metastore fails with the error's class and message,
never the database URL or its password (the body is served without authentication).

- `metastore`: `SELECT 1` answers; detail `latency_ms`.
- `scheduler`: the scheduler job's latest heartbeat (written every few seconds by its
  housekeeping) is at most `scheduler.heartbeat_timeout` seconds old. The job is this
  process's own (`job_id()`) when it has one, else the running scheduler job with the
  newest heartbeat; no running scheduler job fails.
- `dag_processor`: the metastore records no heartbeat of the processor, and a pass only
  imports files whose content changed, so an old `dag_file.last_parsed` is normal for
  a folder nobody edits. The check therefore compares the DAG folders with the
  metastore: it fails when a DAG file is new or changed on disk (content hash differs
  from the one stored) and that change is older than the grace, max(3 x
  `scheduler.min_file_process_interval`, 60 s): a working processor picks it up within
  one interval. Files are found as the processor finds them; the mtime gives the age
  of a change and only files modified after their last import are hashed. No DAG files
  at all is healthy.
- `executor` (when one is given): detail `open_slots`, `running`, `parallelism`. The
  executor interface (`engine.execution.base.Executor`) has no notion of being alive,
  so this check passes whenever the executor answers.

`health_source` turns the same checks into gauges of `/metrics` (`health.check` per
check, `scheduler.heartbeat_age`), so Prometheus alerts on exactly what `/health`
answers, with the configured `scheduler.heartbeat_timeout`, and keeps the history.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from engine.exceptions import StoreError
from engine.observability.collector import Clock, utcnow
from engine.observability.labels import file_label
from engine.parsing.dag_folder import file_hash, find_dag_files
from engine.parsing.parser import dag_folders
from engine.store import dags as dag_store
from engine.store import scheduling
from metrics import Sample

if TYPE_CHECKING:
    from engine.config import Config
    from engine.execution.base import Executor
    from engine.store.db import Store
    from metrics.server import MetricsServer

Check = Callable[[], tuple[bool, Mapping[str, Any]]]
#: Failures of the metastore a check reports as its own failure, with the URL hidden.
DB_ERRORS = (SQLAlchemyError, StoreError)
#: A failing dag_processor check names at most this many files.
MAX_NAMED_FILES = 5
#: The shortest grace before an unparsed change counts against the DAG processor.
MIN_PROCESSOR_GRACE = 60.0


def install_health_checks(
    server: MetricsServer,
    store: Store,
    config: Config,
    *,
    executor: Executor | None = None,
    job_id: Callable[[], int | None] = lambda: None,
    clock: Clock = utcnow,
) -> None:
    """Add the metastore, scheduler, dag_processor and (given one) executor checks."""
    server.add_health_check("metastore", metastore_check(store))
    server.add_health_check("scheduler", scheduler_check(store, config, job_id=job_id, clock=clock))
    server.add_health_check("dag_processor", dag_processor_check(store, config, clock=clock))
    if executor is not None:
        server.add_health_check("executor", executor_check(executor, config))


def health_source(server: MetricsServer) -> Callable[[], list[Sample]]:
    """A scrape-time source of the server's health checks, for `PrometheusBackend.add_source`."""

    def read_health() -> list[Sample]:
        _, body = server.health()
        samples = [
            Sample("health.check", 1.0 if result["ok"] else 0.0, {"check": name})
            for name, result in body["checks"].items()
        ]
        scheduler = body["checks"].get("scheduler", {}).get("detail", {})
        age = scheduler.get("heartbeat_age_seconds")
        if isinstance(age, int | float):
            samples.append(Sample("scheduler.heartbeat_age", max(0.0, float(age))))
        return samples

    return read_health


def metastore_check(store: Store) -> Check:
    """The metastore answers a trivial query; its latency says how well."""

    def check() -> tuple[bool, Mapping[str, Any]]:
        started = time.perf_counter()
        try:
            store.ping()
        except DB_ERRORS as exc:
            return False, error_detail(exc, store)
        return True, {"latency_ms": round((time.perf_counter() - started) * 1000, 2)}

    return check


def scheduler_check(
    store: Store,
    config: Config,
    *,
    job_id: Callable[[], int | None] = lambda: None,
    clock: Clock = utcnow,
) -> Check:
    """A scheduler job is running and its heartbeat is recent."""
    timeout = float(config["scheduler.heartbeat_timeout"])

    def check() -> tuple[bool, Mapping[str, Any]]:
        own = job_id()
        try:
            with store.session(readonly=True) as session:
                job = scheduling.scheduler_job(session, own)
        except DB_ERRORS as exc:
            return False, error_detail(exc, store)
        if job is None:
            reason = "no running scheduler job" if own is None else f"job {own} not found"
            return False, {"error": reason, "heartbeat_timeout_seconds": timeout}
        age = (clock() - job.latest_heartbeat).total_seconds()
        detail = {
            "job_id": job.id,
            "pid": job.pid,
            "hostname": job.hostname,
            "state": job.state,
            "heartbeat_age_seconds": round(age, 3),
            "heartbeat_timeout_seconds": timeout,
        }
        return job.state == "running" and age <= timeout, detail

    return check


def dag_processor_check(store: Store, config: Config, *, clock: Clock = utcnow) -> Check:
    """Changes to DAG files reach the metastore within the grace (see the module doc)."""
    grace = max(3 * float(config["scheduler.min_file_process_interval"]), MIN_PROCESSOR_GRACE)
    folders = dag_folders(config)
    label_folders = [Path(os.path.realpath(Path(config["core.dags_folder"]).expanduser()))]

    def check() -> tuple[bool, Mapping[str, Any]]:
        try:
            with store.session(readonly=True) as session:
                rows = dag_store.parse_states(session)
        except DB_ERRORS as exc:
            return False, error_detail(exc, store)
        now = clock()
        known = rows
        on_disk = [path for folder in folders for path in find_dag_files(folder)]
        if not on_disk and not known:
            return True, {"dag_files": 0, "note": "no DAG files found"}
        late = _unparsed_changes(on_disk, known, now, grace)
        detail: dict[str, Any] = {
            "dag_files": len(on_disk),
            "files_in_metastore": len(known),
            "grace_seconds": grace,
            "files_behind": len(late),
        }
        if known:
            newest = max(parsed for _, parsed in known.values())
            detail["newest_parse_age_seconds"] = round((now - newest).total_seconds(), 3)
        if late:
            oldest = sorted(late.items(), key=lambda item: -item[1])
            detail["oldest_unparsed_change_seconds"] = round(oldest[0][1], 3)
            detail["behind"] = [file_label(path, label_folders) for path, _ in oldest][
                :MAX_NAMED_FILES
            ]
        return not late, detail

    return check


def _unparsed_changes(
    on_disk: list[Path],
    known: Mapping[str, tuple[str, datetime]],
    now: datetime,
    grace: float,
) -> dict[str, float]:
    """path -> seconds since its change, for files changed longer than `grace` ago and
    not imported since (new, or a content hash that differs from the stored one)."""
    late: dict[str, float] = {}
    for path in on_disk:
        try:
            changed = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            age = (now - changed).total_seconds()
            if age <= grace:
                continue
            stored = known.get(str(path))
            if stored is not None and (changed <= stored[1] or file_hash(path) == stored[0]):
                continue
        except OSError:  # removed or unreadable since it was found: the next probe decides
            continue
        late[str(path)] = age
    return late


def executor_check(executor: Executor, config: Config) -> Check:
    """The executor's slots and attempts; it passes whenever the executor answers."""
    parallelism = config["core.parallelism"]

    def check() -> tuple[bool, Mapping[str, Any]]:
        return True, {
            "executor": getattr(executor, "name", type(executor).__name__),
            "open_slots": executor.open_slots,
            "running": len(executor.running_ti_ids()),
            "parallelism": parallelism,
        }

    return check


def error_detail(exc: BaseException, store: Store) -> dict[str, str]:
    """The error's class and first line, with the metastore's URL and password blanked."""
    lines = str(exc).strip().splitlines()
    message = lines[0] if lines else ""
    url = store.url
    for secret in (
        url.render_as_string(hide_password=False),
        url.render_as_string(hide_password=True),
        url.password,
    ):
        if secret:
            message = message.replace(str(secret), "***")
    return {"error": type(exc).__name__, "message": message}
