"""Rendering of CLI listings as a text table or as JSON, the same columns either way."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

OUTPUT_FORMATS = ("table", "json")


def output_option(func: F) -> F:
    """Add `--output table|json` to a listing verb."""
    return click.option(
        "--output",
        "-o",
        type=click.Choice(OUTPUT_FORMATS),
        default="table",
        show_default=True,
        help="Output format.",
    )(func)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def render_rows(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    output: str,
    optional: Collection[str] = (),
) -> str:
    """The rows as a table with a header, or as a JSON array of objects with those keys;
    an `optional` column is left out of the objects of rows that lack it."""
    if output == "json":
        payload = [
            {
                column: _json_value(row.get(column))
                for column in columns
                if column not in optional or column in row
            }
            for row in rows
        ]
        return json.dumps(payload, indent=2, default=str)
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [
        max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)
    ]
    lines = [" | ".join(column.ljust(w) for column, w in zip(columns, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines.extend(
        " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )
    return "\n".join(lines)


def echo_rows(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    output: str,
    optional: Collection[str] = (),
) -> None:
    """Print a listing; an empty table says so instead of printing a bare header."""
    if not rows and output == "table":
        click.echo("(no rows)")
        return
    click.echo(render_rows(rows, columns, output, optional))


def echo_object(obj: Mapping[str, Any], output: str, text: str) -> None:
    """Print one result: `text` for a table, the object for JSON."""
    if output == "json":
        click.echo(json.dumps({k: _json_value(v) for k, v in obj.items()}, default=str))
    else:
        click.echo(text)
