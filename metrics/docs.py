"""The docs' metric table, generated from the catalog: `python -m metrics.docs`.

The table lives between two markers in docs/metrics.md, so the docs cannot drift from
metrics/catalog.py: `--write docs/metrics.md` regenerates it, `--check docs/metrics.md`
fails (exit 1) when it is stale, which is what the test suite runs. Text outside the
markers is never touched, so the rest of the page stays hand-written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from metrics import render_catalog_rows
from metrics.catalog import CATALOG, Catalog

START_MARKER = "<!-- metric-catalog:start -->"
END_MARKER = "<!-- metric-catalog:end -->"


class MarkerError(ValueError):
    """The file has no single, well-ordered pair of metric catalog markers."""


def _escape(value: str) -> str:
    # A `|` would end the cell, even inside a code span (GitHub unescapes `\|` there).
    return " ".join(value.split()).replace("|", "\\|")


def _code(value: str) -> str:
    return f"`{_escape(value)}`" if value else ""


def _labels(value: str) -> str:
    return ", ".join(_code(label) for label in value.split(",") if label)


#: (header, key of `render_catalog_rows`, how to show the cell)
_COLUMNS: tuple[tuple[str, str, Callable[[str], str]], ...] = (
    ("name", "name", _code),
    ("type", "type", _escape),
    ("unit", "unit", _escape),
    ("labels", "labels", _labels),
    ("Prometheus name", "prometheus_name", _code),
    ("StatsD legacy name", "legacy_name", _code),
    ("when gone", "when_gone", _escape),
    ("help", "help", _escape),
)


def catalog_markdown(catalog: Catalog = CATALOG) -> str:
    """The catalog as a Markdown table, one row per metric, in catalog order."""
    lines = [
        "| " + " | ".join(header for header, _, _ in _COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    for row in render_catalog_rows(catalog):
        cells = (show(row[key]) for _, key, show in _COLUMNS)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _block_span(text: str) -> tuple[int, int]:
    start = text.find(START_MARKER)
    end = text.find(END_MARKER)
    if start < 0 or end < 0:
        raise MarkerError(f"no {START_MARKER} ... {END_MARKER} block")
    if text.count(START_MARKER) > 1 or text.count(END_MARKER) > 1:
        raise MarkerError("more than one metric catalog block")
    if end < start:
        raise MarkerError(f"{END_MARKER} comes before {START_MARKER}")
    return start + len(START_MARKER), end


def current_block(text: str) -> str:
    """What sits between the markers now (without the markers and the newline after start)."""
    begin, end = _block_span(text)
    return text[begin:end].removeprefix("\n")


def replace_block(text: str, table: str) -> str:
    """`text` with the block between the markers replaced by `table`, the rest unchanged."""
    begin, end = _block_span(text)
    return f"{text[:begin]}\n{table}{text[end:]}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (`--write`) or verify (`--check`) the metric table of a Markdown file."""
    parser = argparse.ArgumentParser(
        prog="python -m metrics.docs",
        description="Generate the docs' metric catalog table from metrics/catalog.py.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path, metavar="FILE", help="rewrite the table in FILE")
    mode.add_argument("--check", type=Path, metavar="FILE", help="exit 1 if FILE is stale")
    args = parser.parse_args(argv)
    path: Path = args.write or args.check
    try:
        text = path.read_text(encoding="utf-8")
        updated = replace_block(text, catalog_markdown())
    except (OSError, MarkerError) as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 1
    if args.check:
        if updated != text:
            print(
                f"error: {path}: the metric catalog table is stale; "
                f"run `python -m metrics.docs --write {path}`",
                file=sys.stderr,
            )
            return 1
        return 0
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    print(f"{path}: metric catalog table up to date ({len(CATALOG)} metrics)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
