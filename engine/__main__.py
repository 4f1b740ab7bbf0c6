"""`python -m engine`: the dagwatch command."""

from engine.cli import main

main()
