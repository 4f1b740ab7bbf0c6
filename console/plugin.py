"""How the console plugs into the engine (`dagwatch.plugins` entry point): its CLI verbs."""

from __future__ import annotations

from engine.cli.verbs import Verb

# the `console` and `users` verbs, imported when they run
VERBS = (
    Verb(
        "console",
        "console.cli:console",
        "Serve the operations console (Streamlit) until stopped.",
    ),
    Verb("users", "console.cli:users", "Console users and their roles (viewer, operator, admin)."),
)
