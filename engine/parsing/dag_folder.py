"""Finding DAG files: a walk of a folder that survives anything a filesystem can hold.

Broken or looping symbolic links, unreadable files and folders, FIFOs and devices named
`*.py`, files that vanish between the listing and the read: each bad entry becomes a
`Problem` naming its path, and the walk goes on with the rest. A symbolic link to a
folder is followed once (also outside the DAG folder, as Airflow does); a folder already
walked is never walked again, and a link back to a folder it sits in is reported as a
loop. Each file is read once, without ever blocking: its bytes give both the safe-mode
check and the content hash.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: Files that mention neither word cannot define a DAG; skipping them saves an import.
SAFE_MODE_WORDS = (b"dag", b"DAG")
#: Entries never looked into: hidden files and folders, bytecode caches.
_SKIPPED_PREFIXES = (".", "__pycache__")
#: Longest path the metastore stores (dag_file.fileloc, import_error.filename).
MAX_PATH_LENGTH = 1000
#: Flags for opening a DAG file: never wait for a writer (FIFO), never adopt a terminal.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)

_KINDS = {
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
}


@dataclass(frozen=True)
class Problem:
    """One entry the walk could not use, and why, in one line."""

    path: str
    reason: str
    #: an import error (a DAG file or folder whose DAGs cannot load) or only a warning
    is_error: bool = True

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class FolderScan:
    """What walking the DAG folders found: DAG files by real path, with content hashes."""

    files: dict[Path, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.is_error]

    @property
    def warnings(self) -> list[Problem]:
        return [problem for problem in self.problems if not problem.is_error]


class UnreadableFile(Exception):
    """The entry cannot be read as a DAG file (the message says why)."""


class VanishedFile(Exception):
    """The entry disappeared since it was listed (nothing to report)."""


def printable(path: str) -> str:
    """`path` as text any log or terminal takes (bytes that are not UTF-8 escaped)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _storable(path: str) -> bool:
    """Whether the metastore can hold `path`: UTF-8, not too long."""
    return len(path) <= MAX_PATH_LENGTH and printable(path) == path


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")


def _os_reason(path: str, exc: OSError) -> str:
    """One line for an OSError met on `path`."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (resolving the link never ends)"
    if exc.errno == errno.ENOENT and os.path.islink(path):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"broken symbolic link (its target {target} does not exist)"
    return f"cannot be read: {exc.strerror or type(exc).__name__}"


def read_dag_file(path: str | Path) -> bytes:
    """The bytes of a regular file, read without blocking (else UnreadableFile/VanishedFile)."""
    path = str(path)
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):  # opening a FIFO or a device could block or have effects
            raise UnreadableFile(f"not a regular file: {_kind(mode)}")
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ENOENT and not os.path.islink(path):
            raise VanishedFile(path) from exc  # (perhaps made again since: the next scan)
        raise UnreadableFile(_os_reason(path, exc)) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # replaced since the stat above
            raise UnreadableFile(f"not a regular file: {_kind(mode)}")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    except OSError as exc:
        raise UnreadableFile(_os_reason(path, exc)) from exc
    finally:
        os.close(fd)


def file_hash(path: Path) -> str:
    """The SHA-256 of a file's content (the file is read without blocking)."""
    try:
        return hashlib.sha256(read_dag_file(path)).hexdigest()
    except (UnreadableFile, VanishedFile) as exc:
        raise OSError(f"{path}: {exc}") from exc


def might_contain_dag(data: bytes) -> bool:
    """Whether content mentions `dag` or `DAG` (safe mode: others cannot define a DAG)."""
    return any(word in data for word in SAFE_MODE_WORDS)


def scan_folders(folders: list[Path]) -> FolderScan:
    """Walk each folder (or take each file) and return its DAG files and bad entries."""
    scan = FolderScan()
    visited: set[tuple[int, int]] = set()
    for folder in folders:
        _Walk(scan, visited).folder(Path(os.path.abspath(folder)))
    return scan


def find_dag_files(folder: Path) -> list[Path]:
    """The DAG files under `folder` by real path, in walk order; bad entries left out."""
    return list(scan_folders([folder]).files)


class _Walk:
    """One depth-first walk, folders in name order, files before sub-folders."""

    def __init__(self, scan: FolderScan, visited: set[tuple[int, int]]) -> None:
        self.scan = scan
        #: (device, inode) of every folder walked, so none is walked twice
        self.visited = visited

    def folder(self, root: Path) -> None:
        try:
            info = os.stat(root)
        except FileNotFoundError:
            return  # no DAG folder (yet): nothing to load
        except OSError as exc:
            self._problem(str(root), _os_reason(str(root), exc))
            return
        if not stat.S_ISDIR(info.st_mode):
            self._file(str(root))
            return
        # Each frame: a folder and the (device, inode) of it and its ancestors.
        stack: list[tuple[str, tuple[tuple[int, int], ...]]] = [(str(root), ())]
        while stack:
            path, ancestors = stack.pop()
            key = self._enter(path, ancestors)
            if key is None:
                continue
            subfolders = self._list(path)
            for sub in reversed(subfolders):
                stack.append((sub, (*ancestors, key)))

    def _enter(self, path: str, ancestors: tuple[tuple[int, int], ...]) -> tuple[int, int] | None:
        """The folder's identity if it is to be walked now; None to pass it by."""
        try:
            info = os.stat(path)
        except OSError as exc:
            # gone since its parent was listed (perhaps made again since: the next walk
            # takes it), unless it is a link to nothing
            vanished = exc.errno == errno.ENOENT and not os.path.islink(path)
            if not vanished and os.path.lexists(path):
                self._problem(path, _os_reason(path, exc))
            return None
        key = (info.st_dev, info.st_ino)
        if key in ancestors:
            target = os.path.realpath(path)
            self._problem(
                path,
                f"symbolic link back to {target}, a folder it is inside of: not followed (a loop)",
                is_error=False,
            )
            return None
        if key in self.visited:
            log.debug("%s: folder already walked through another path", path)
            return None
        self.visited.add(key)
        return key

    def _list(self, path: str) -> list[str]:
        """Take the folder's DAG files; return its sub-folders to walk, in name order."""
        try:
            with os.scandir(path) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except FileNotFoundError:
            return []  # removed since its parent was listed
        except OSError as exc:
            self._problem(
                path, f"folder cannot be listed ({exc.strerror}): its DAG files are not loaded"
            )
            return []
        subfolders = []
        for entry in entries:
            if entry.name.startswith(_SKIPPED_PREFIXES):
                continue
            if printable(entry.name) != entry.name:
                self._problem(entry.path, "name is not valid UTF-8: skipped", is_error=False)
                continue
            if self._is_dir(entry):
                subfolders.append(entry.path)
            elif entry.name.endswith(".py"):
                self._file(entry.path)
        return subfolders

    def _is_dir(self, entry: os.DirEntry) -> bool:
        try:
            return entry.is_dir()
        except OSError as exc:  # a looping or unreachable link
            if not entry.name.endswith(".py"):  # `.py` entries are reported when read
                self._problem(entry.path, _os_reason(entry.path, exc), is_error=False)
            return False

    def _file(self, path: str) -> None:
        try:
            data = read_dag_file(path)
        except VanishedFile:
            log.debug("%s: removed while the DAG folder was walked", path)
            return
        except UnreadableFile as exc:
            self._problem(path, str(exc))
            return
        if not might_contain_dag(data):
            return
        real = os.path.realpath(path)
        if not _storable(real):
            self._problem(
                path,
                f"real path {printable(real)} is not valid UTF-8 or longer than "
                f"{MAX_PATH_LENGTH} characters: skipped",
                is_error=False,
            )
            return
        self.scan.files.setdefault(Path(real), hashlib.sha256(data).hexdigest())

    def _problem(self, path: str, reason: str, *, is_error: bool = True) -> None:
        # An import error is stored under its path: one the metastore cannot hold is
        # reported as a warning instead, by its printable form.
        storable = _storable(path)
        self.scan.problems.append(Problem(printable(path), reason, is_error and storable))
