"""How the console plugs into the engine (`dagwatch.plugins` entry point): its CLI verbs."""

from __future__ import annotations

from typing import Any


def commands() -> list[Any]:
    """The `console` and `users` verbs."""
    from console.cli import console, users

    return [console, users]
