"""Error signatures: one key for every failure that is "the same problem".

A try's error (`ValueError: no rows for 2026-04-10 in /data/in/17.csv`) is normalised:
numbers, ids, hex, UUIDs, quoted strings, paths, URLs, addresses and timestamps become
placeholders, so `ValueError: no rows for <ts> in <path>` groups the failures of every day
and every file. The exception type and the words of the message stay: they are what
tells two problems apart.

The signature is computed when the try's error is written (`task_try.error_signature`,
indexed), so a page grouping the failures of a week counts rows per key instead of
normalising thousands of messages on every view; alerts can group by the same key.
"""

from __future__ import annotations

import hashlib
import re

#: lines of the error that are normalised, and characters of each (a traceback's tail, or
#: a huge message, adds nothing to a key)
MAX_LINES = 20
MAX_LINE_CHARS = 500
#: characters of a normalised message kept for display
SHOWN_CHARS = 300

_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, flags), replacement)
    for pattern, flags, replacement in (
        # URLs first: they hold paths, hosts, numbers and secrets
        (r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()]+", 0, "<url>"),
        (r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b", 0, "<email>"),
        # quoted strings (the value that varies: a key, a table, a file name)
        (r"'(?:[^'\\\n]|\\.)*'", 0, "'<str>'"),
        (r'"(?:[^"\\\n]|\\.)*"', 0, '"<str>"'),
        # paths: two or more segments, absolute or relative, POSIX or Windows
        (r"(?:[A-Za-z]:|[\w.@%+~=-]+)?(?:[\\/][\w.@%+~=-]+){2,}[\\/]?", 0, "<path>"),
        # timestamps and dates before the numbers inside them
        (
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2}| ?UTC)?)?\b",
            0,
            "<ts>",
        ),
        (r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b", 0, "<ts>"),
        (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I, "<uuid>"),
        (r"\b0x[0-9a-f]+\b", re.I, "<hex>"),
        # a hex run of 8+ with at least one digit and one letter (hashes, commit ids)
        (r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I, "<hex>"),
        (r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b", 0, "<ip>"),
        # numbers, also inside identifiers (run_42, worker-3, 1.5s)
        (r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.I, "<n>"),
        (r"[ \t]+", 0, " "),
    )
)


def normalise(error: str | None) -> str:
    """The error with everything that varies between occurrences replaced."""
    lines = [line.strip()[:MAX_LINE_CHARS] for line in (error or "").splitlines()]
    text = "\n".join([line for line in lines if line][:MAX_LINES])
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def signature(error: str | None) -> str | None:
    """A 16-hex-digit key of the normalised error; None for a try without an error."""
    if not error or not error.strip():
        return None
    return hashlib.sha256(normalise(error).encode()).hexdigest()[:16]


def headline(error: str | None) -> str:
    """The normalised error as one line for a table (its first lines, shortened)."""
    text = " | ".join(normalise(error).splitlines())
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
