"""`dagwatch version`."""

from __future__ import annotations

import importlib

import click

from engine.cli.usage import Command

FALLBACK_VERSION = "0.1.0"


def engine_version() -> str:
    """engine.__version__, else the installed distribution's version, else the fallback."""
    declared = getattr(importlib.import_module("engine"), "__version__", None)
    if isinstance(declared, str) and declared:
        return declared
    from importlib import metadata

    try:
        return metadata.version("dagwatch")
    except metadata.PackageNotFoundError:
        return FALLBACK_VERSION


@click.command(cls=Command)
def version() -> None:
    """Print the dagwatch version."""
    click.echo(engine_version())
