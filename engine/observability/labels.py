"""Label values the engine derives, shared by what it pushes and what it collects."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePath


def folder_forms(folders: Iterable[Path]) -> tuple[PurePath, ...]:
    """Each folder as configured and resolved: stored paths are resolved, config may not be."""
    forms: dict[PurePath, None] = {}
    for folder in folders:
        forms[PurePath(folder)] = None
        forms[PurePath(os.path.realpath(folder))] = None  # never raises, even on a loop
    return tuple(forms)


def file_label(path: str, folders: Iterable[PurePath]) -> str:
    """A bounded, readable `file` label: relative to the DAG folder, else the basename."""
    pure = PurePath(path)
    for folder in folders:
        if pure.is_relative_to(folder):
            return pure.relative_to(folder).as_posix()
    return pure.name
