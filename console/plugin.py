"""How the console plugs into the engine (`dagwatch.plugins` entry point): its CLI verbs
and the capacity rollup's writer (a scheduler service, outside the tick)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.cli.verbs import Verb
from engine.config import Config
from engine.hooks import Registry

if TYPE_CHECKING:
    from engine.clock import Clock
    from engine.store.db import Store


def register(registry: Registry, config: Config) -> None:
    """Write the capacity rollup in a background service of the scheduler (imported when
    the scheduler starts it: other processes never load the console's queries)."""

    def rollup(cfg: Config, store: Store, *, clock: Clock) -> Any:
        from console.rollup import CapacityRollup

        return CapacityRollup(cfg, store, registry=registry, clock=clock)

    registry.add_service(rollup)


# the `console` and `users` verbs, imported when they run
VERBS = (
    Verb(
        "console",
        "console.cli:console",
        "Serve the operations console (Streamlit) until stopped.",
    ),
    Verb("users", "console.cli:users", "Console users and their roles (viewer, operator, admin)."),
)
