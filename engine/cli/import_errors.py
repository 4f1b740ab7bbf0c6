"""Import errors as a person at a terminal reads them: one line per file in a table that
fits the terminal, the whole traceback on request, and the error of a DAG's file when
`dags test` cannot find the DAG because that file failed."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: the table's width: the terminal's, within these bounds
MIN_WIDTH, MAX_WIDTH = 80, 120
#: lines of a traceback `dags test` prints
TAIL_LINES = 6


def table_width() -> int:
    columns = shutil.get_terminal_size(fallback=(100, 24)).columns
    return max(MIN_WIDTH, min(MAX_WIDTH, columns))


def error_line(stacktrace: str) -> str:
    """The line that says what went wrong: the exception line of a traceback (its last
    line that is not indented), else the error's first line."""
    lines = [line.rstrip() for line in (stacktrace or "").splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback"):
        unindented = [line for line in lines if not line.startswith(" ")]
        if unindented:
            return unindented[-1]
    return lines[0]


def short_path(filename: str, folders: Sequence[Path]) -> str:
    """`filename` relative to the DAG folder it is in, else as it is."""
    for folder in folders:
        try:
            return (
                os.path.relpath(filename, folder)
                if Path(filename).is_relative_to(folder)
                else filename
            )
        except ValueError:
            continue
    return filename


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def _clip_left(text: str, width: int) -> str:
    """A path clipped at its start, so the file's name stays readable."""
    return text if len(text) <= width else "…" + text[-max(1, width - 1) :]


def table(rows: Sequence[dict[str, Any]], folders: Sequence[Path], width: int) -> str:
    """filename | when | error, one line each, at most `width` columns."""
    when = [_when(row["timestamp"]) for row in rows]
    names = [short_path(row["filename"], folders) for row in rows]
    name_width = min(max([len("filename"), *map(len, names)]), width // 3)
    when_width = max([len("timestamp"), *map(len, when)])
    error_width = max(len("error"), width - name_width - when_width - 6)
    lines = [
        f"{'filename'.ljust(name_width)} | {'timestamp'.ljust(when_width)} | error",
        f"{'-' * name_width}-+-{'-' * when_width}-+-{'-' * error_width}",
    ]
    for row, name, stamp in zip(rows, names, when, strict=True):
        error = _clip(error_line(row["error"]), error_width)
        name = _clip_left(name, name_width).ljust(name_width)
        lines.append(f"{name} | {stamp.ljust(when_width)} | {error}")
    return "\n".join(lines)


def verbose(rows: Sequence[dict[str, Any]]) -> str:
    """Each file, its time and its whole traceback, separated by a blank line."""
    blocks = [
        f"{row['filename']}  ({_when(row['timestamp'])})\n{(row['error'] or '').rstrip()}"
        for row in rows
    ]
    return "\n\n".join(blocks)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else str(value or "")


def error_for_dag(session: Session, dag_id: str) -> tuple[str, str] | None:
    """(file, traceback) of the import error that hides DAG `dag_id`: the error of the file
    it was last parsed from, else of a file whose source names it; None if none."""
    from engine.store import dags

    errors = dags.import_error_texts(session)
    if not errors:
        return None
    fileloc = dags.fileloc_of(session, dag_id)
    if fileloc is not None and fileloc in errors:
        return fileloc, errors[fileloc]
    pattern = re.compile(
        r"""["']""" + re.escape(dag_id) + r"""["']|\bdef\s+""" + re.escape(dag_id) + r"\b"
    )
    for filename in sorted(errors):
        try:
            source = Path(filename).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if pattern.search(source):
            return filename, errors[filename]
    return None


def tail(stacktrace: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(stacktrace.rstrip().splitlines()[-lines:])
