"""Reads and writes of what the DAG processor found: files, DAGs, import errors.

A file that breaks keeps its last good DAGs (a typo must not stop schedules); its
import error is shown until the file parses again. An entry of the DAG folder that
cannot be read (a broken link, a FIFO, a folder that cannot be listed) is an import
error too, until it can be read. A dag_id claimed by two files is an
import error on the file that did not hold it first, naming both files.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from engine.exceptions import NotFound
from engine.store import coordination
from engine.store.models import Dag, DagFile, ImportError_


@dataclass
class FileParseResult:
    """What importing one DAG file produced."""

    fileloc: str
    content_hash: str
    duration: float
    dags: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    timed_out: bool = False


def dag_hash(serialized: dict[str, Any]) -> str:
    """sha256 of the canonical JSON form."""
    text = json.dumps(serialized, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_states(session: Session) -> dict[str, tuple[str, datetime]]:
    """fileloc -> (content hash, when it was last parsed), for every known DAG file."""
    rows = session.execute(select(DagFile.fileloc, DagFile.content_hash, DagFile.last_parsed))
    return {fileloc: (digest, parsed) for fileloc, digest, parsed in rows}


def get_file_hashes(session: Session) -> dict[str, str]:
    """fileloc -> content hash of the last parse."""
    return dict(session.execute(select(DagFile.fileloc, DagFile.content_hash)).all())


def get_parse_durations(session: Session) -> dict[str, float]:
    """fileloc -> seconds its last import took (as recorded, whether or not it failed)."""
    return dict(session.execute(select(DagFile.fileloc, DagFile.parse_duration)).all())


def get_import_errors(session: Session, filenames: Iterable[str]) -> dict[str, str]:
    """filename -> the import error on record, for these files."""
    wanted = list(filenames)
    if not wanted:
        return {}
    query = select(ImportError_.filename, ImportError_.stacktrace).where(
        ImportError_.filename.in_(wanted)
    )
    return dict(session.execute(query).all())


def record_entry_errors(session: Session, errors: Mapping[str, str], *, now: datetime) -> None:
    """Store import errors for entries that could not be read (path -> reason)."""
    for path, reason in errors.items():
        _set_import_error(session, path, reason, now)
    if errors:
        # A known file that turned unreadable keeps its DAGs; forgetting its hash makes
        # the first successful read parse it again, which clears the error.
        session.execute(
            update(DagFile)
            .where(DagFile.fileloc.in_(list(errors)))
            .values(content_hash="", has_import_error=True)
        )


@dataclass(frozen=True)
class ParseTotals:
    """What the metastore holds after a pass: the numbers every report shows."""

    dags: int  #: active DAGs
    files: int  #: DAG files on record
    import_errors: int  #: import errors on record


def parse_totals(session: Session) -> ParseTotals:
    """Active DAGs, DAG files and import errors on record, in one statement."""
    dags = select(func.count()).select_from(Dag).where(Dag.is_active).scalar_subquery()
    files = select(func.count()).select_from(DagFile).scalar_subquery()
    errors = select(func.count()).select_from(ImportError_).scalar_subquery()
    row = session.execute(select(dags, files, errors)).one()
    return ParseTotals(int(row[0]), int(row[1]), int(row[2]))


def _owners(
    session: Session, results: Sequence[FileParseResult]
) -> tuple[dict[str, str], dict[str, str]]:
    """Decide which file owns each dag_id; return (dag_id -> file, loser file -> error)."""
    claims: dict[str, list[str]] = defaultdict(list)
    for result in results:
        if result.error is None:
            for serialized in result.dags:
                claims[serialized["dag_id"]].append(result.fileloc)
    if not claims:
        return {}, {}
    batch = {result.fileloc for result in results}
    holders = dict(
        session.execute(
            select(Dag.dag_id, Dag.fileloc).where(Dag.dag_id.in_(claims), Dag.is_active)
        ).all()
    )
    owners: dict[str, str] = {}
    errors: dict[str, str] = {}
    for dag_id, files in claims.items():
        holder = holders.get(dag_id)
        if holder in files:
            owner = holder
        elif holder is not None and holder not in batch:
            owner = holder  # an unchanged file still defines it
        else:
            owner = sorted(files)[0]
        owners[dag_id] = owner
        for loser in sorted(set(files) - {owner}):
            errors[loser] = (
                f"DAG id {dag_id!r} is defined in two files: {owner} and {loser}; "
                f"dag ids must be unique (the DAG from {owner} is kept)"
            )
    return owners, errors


def record_parse_results(
    session: Session,
    results: Sequence[FileParseResult],
    *,
    now: datetime,
    paused_at_creation: bool,
) -> None:
    """Store files, DAGs and import errors from one processor pass. On PostgreSQL the
    passes of several DAG processors (one per scheduler) take turns: each reads a row
    before writing it, and two at once would both insert a file or DAG new to both."""
    coordination.lock(session, coordination.PARSE_RESULTS_LOCK)
    owners, duplicate_errors = _owners(session, results)
    for result in results:
        error = result.error or duplicate_errors.get(result.fileloc)
        _upsert_file(session, result, error is not None, now)
        if error is not None:
            _set_import_error(session, result.fileloc, error, now)
            continue
        session.execute(delete(ImportError_).where(ImportError_.filename == result.fileloc))
        kept = [s for s in result.dags if owners.get(s["dag_id"]) == result.fileloc]
        for serialized in kept:
            _upsert_dag(session, result.fileloc, serialized, now, paused_at_creation)
        session.execute(
            update(Dag)
            .where(Dag.fileloc == result.fileloc, Dag.dag_id.not_in([s["dag_id"] for s in kept]))
            .values(is_active=False)
        )


def _upsert_file(session: Session, result: FileParseResult, broken: bool, now: datetime) -> None:
    row = session.get(DagFile, result.fileloc) or DagFile(fileloc=result.fileloc)
    row.content_hash = result.content_hash
    row.last_parsed = now
    row.parse_duration = result.duration
    row.dag_count = 0 if broken else len(result.dags)
    row.task_count = 0 if broken else sum(len(s["tasks"]) for s in result.dags)
    row.has_import_error = broken
    row.timed_out = result.timed_out
    session.add(row)


def _set_import_error(session: Session, fileloc: str, error: str, now: datetime) -> None:
    row = session.execute(
        select(ImportError_).where(ImportError_.filename == fileloc)
    ).scalar_one_or_none() or ImportError_(filename=fileloc, first_seen=now)
    row.stacktrace = error
    row.timestamp = now
    session.add(row)


def _upsert_dag(
    session: Session, fileloc: str, serialized: dict[str, Any], now: datetime, paused: bool
) -> None:
    row = session.get(Dag, serialized["dag_id"])
    if row is None:
        flag = serialized.get("is_paused_upon_creation")
        row = Dag(dag_id=serialized["dag_id"], is_paused=paused if flag is None else bool(flag))
    row.fileloc = fileloc
    row.is_active = True
    row.serialized = serialized
    row.dag_hash = dag_hash(serialized)
    row.schedule = serialized.get("timetable_summary")
    row.owner = serialized.get("owner")
    row.description = serialized.get("description")
    row.dag_display_name = serialized.get("dag_display_name")
    row.tags = list(serialized.get("tags") or [])
    row.task_count = len(serialized["tasks"])
    row.max_active_runs = serialized.get("max_active_runs")
    row.max_active_tasks = serialized.get("max_active_tasks")
    row.last_parsed = now
    session.add(row)


def forget_missing_files(session: Session, present: Iterable[str]) -> list[str]:
    """Files no longer found: drop their records and deactivate their DAGs."""
    present = set(present)
    known = session.execute(select(DagFile.fileloc)).scalars().all()
    errors = session.execute(select(ImportError_.filename)).scalars().all()
    gone = sorted({f for f in [*known, *errors] if f not in present})
    if gone:
        session.execute(delete(DagFile).where(DagFile.fileloc.in_(gone)))
        session.execute(delete(ImportError_).where(ImportError_.filename.in_(gone)))
        session.execute(update(Dag).where(Dag.fileloc.in_(gone)).values(is_active=False))
    return gone


def list_dags(session: Session, *, include_inactive: bool = False) -> list[Dag]:
    query = select(Dag).order_by(Dag.dag_id)
    if not include_inactive:
        query = query.where(Dag.is_active)
    return list(session.execute(query).scalars())


def import_error_texts(session: Session) -> dict[str, str]:
    """filename -> traceback of every current import error."""
    return dict(session.execute(select(ImportError_.filename, ImportError_.stacktrace)).all())


def fileloc_of(session: Session, dag_id: str) -> str | None:
    """The file `dag_id` was last parsed from (active or not); None if never parsed."""
    row = session.get(Dag, dag_id)
    return None if row is None else row.fileloc


def dag_exists(session: Session, dag_id: str) -> bool:
    """Whether `dag_id` was ever parsed (active or not)."""
    return session.get(Dag, dag_id) is not None


def get_dag(session: Session, dag_id: str) -> Dag:
    """The active DAG `dag_id`, or NotFound with a hint."""
    row = session.get(Dag, dag_id)
    if row is None or not row.is_active:
        raise NotFound(
            f"DAG {dag_id!r} not found; `dagwatch dags list` shows the DAGs, "
            "`dagwatch dags list-import-errors` the files that failed"
        )
    return row


def set_paused(session: Session, dag_id: str, paused: bool) -> bool:
    """Pause or unpause; return whether anything changed."""
    row = get_dag(session, dag_id)
    changed = row.is_paused != paused
    row.is_paused = paused
    return changed


def list_import_errors(session: Session) -> list[ImportError_]:
    return list(session.execute(select(ImportError_).order_by(ImportError_.filename)).scalars())


def list_dag_files(session: Session) -> list[DagFile]:
    return list(session.execute(select(DagFile).order_by(DagFile.fileloc)).scalars())


def serialized_dag_and_active(session: Session, dag_id: str) -> tuple[dict[str, Any], bool] | None:
    """The DAG's serialized form and whether it is active; None when it was never parsed."""
    row = session.get(Dag, dag_id)
    if row is None or row.serialized is None:
        return None
    return row.serialized, bool(row.is_active)
