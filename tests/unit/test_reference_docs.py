"""The configuration and CLI reference pages: generated from the code, and kept in step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from engine.cli import reference
from engine.config import OPTIONS, env_variable

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "reference"


def test_the_committed_pages_are_up_to_date() -> None:
    assert reference.stale_pages(REFERENCE) == [], (
        "docs/reference/ is stale: run `python -m engine.cli.reference --write docs/reference/`"
    )
    assert reference.main(["--check", str(REFERENCE)]) == 0


def test_every_option_is_documented_with_its_default_and_variable() -> None:
    page = reference.configuration_markdown()

    for option in OPTIONS:
        assert f"### `{option.name}` {{ #{option.name} }}" in page
        assert f"`{env_variable(option.name)}`" in page
    entry = page.split("### `core.parallelism`")[1].split("###")[0]
    assert "- default: `32`" in entry
    assert "- allowed: an integer from 1 to 2147483647" in entry
    # a default computed from the home is shown as a path under it, never this machine's
    assert "- default: `$DAGWATCH_HOME/dags`" in page
    assert "- default: `sqlite:///$DAGWATCH_HOME/dagwatch.db`" in page
    secret = page.split("### `database.sql_alchemy_conn`")[1].split("###")[0]
    assert "- secret:" in secret


def test_every_verb_and_subcommand_is_documented_with_its_options() -> None:
    page = reference.cli_markdown()
    verbs = dict(reference._verbs())

    # the plugins shipped with dagwatch add their verbs through the entry point
    assert {"alerts", "sla", "console", "users", "dags", "worker", "version"} <= set(verbs)
    for name, command in verbs.items():
        assert f"\n## dagwatch {name}\n" in page
        if isinstance(command, click.Group):
            for sub in command.commands:
                assert f"\n### dagwatch {name} {sub}\n" in page
    trigger = page.split("### dagwatch dags trigger\n")[1].split("\n## ")[0].split("\n### ")[0]
    assert "dagwatch dags trigger [OPTIONS] DAG_ID" in trigger
    assert "- `--run-id TEXT`:" in trigger
    assert "- `-o, --output [table|json]`: Output format." in trigger


def test_check_fails_on_a_stale_page_and_write_fixes_it(tmp_path: Path) -> None:
    assert reference.main(["--write", str(tmp_path)]) == 0
    page = tmp_path / reference.CLI_PAGE
    page.write_text(page.read_text().replace("Print the dagwatch version.", "Old text."))

    done = subprocess.run(
        [sys.executable, "-m", "engine.cli.reference", "--check", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )

    assert done.returncode == 1
    assert done.stderr == (
        f"error: {page}: stale; run `python -m engine.cli.reference --write docs/reference/`\n"
    )
    assert reference.main(["--write", str(tmp_path)]) == 0
    assert reference.stale_pages(tmp_path) == []


def test_a_missing_page_is_stale(tmp_path: Path) -> None:
    assert reference.stale_pages(tmp_path) == [reference.CONFIG_PAGE, reference.CLI_PAGE]
