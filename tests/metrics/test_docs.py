"""The docs' metric table: generated from the catalog, and kept in step with it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from metrics import CATALOG, Catalog, Metric
from metrics.docs import (
    END_MARKER,
    START_MARKER,
    MarkerError,
    catalog_markdown,
    current_block,
    main,
    replace_block,
)

REPO = Path(__file__).resolve().parents[2]
METRICS_PAGE = REPO / "docs" / "metrics.md"
BEFORE = "# Title\n\nHand-written | text, with `code`.\n\n"
AFTER = "\n\n## Next section\n\nMore hand-written text.\n"


def cells(line: str) -> list[str]:
    """The cells of a Markdown table row, splitting on unescaped pipes only."""
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def stale_file(tmp_path: Path) -> Path:
    path = tmp_path / "README.md"
    path.write_text(f"{BEFORE}{START_MARKER}\n| old | table |\n{END_MARKER}{AFTER}")
    return path


def test_the_readme_table_is_up_to_date() -> None:
    text = METRICS_PAGE.read_text(encoding="utf-8")

    assert current_block(text) == catalog_markdown(), (
        "docs/metrics.md's metric catalog is stale: run "
        "`python -m metrics.docs --write docs/metrics.md`"
    )
    assert main(["--check", str(METRICS_PAGE)]) == 0


def test_one_row_per_metric_with_every_name() -> None:
    lines = catalog_markdown().splitlines()

    assert cells(lines[0]) == [
        "name", "type", "unit", "labels", "Prometheus name", "StatsD legacy name", "when gone",
        "help",
    ]  # fmt: skip
    assert len(lines) == 2 + len(CATALOG)
    finish = next(line for line in lines if line.startswith("| `ti.finish` |"))
    assert cells(finish) == [
        "`ti.finish`",
        "counter",
        "",
        "`dag_id`, `task_id`, `state`",
        "`dagwatch_ti_finish_total`",
        "`ti.finish.{dag_id}.{task_id}.{state}`",
        "",
        "Task attempts finished, by final state.",
    ]


def test_pipes_in_cells_are_escaped() -> None:
    catalog = Catalog([Metric("rows.loaded", "counter", "", ("dag_id",), "left | right")])

    row = catalog_markdown(catalog).splitlines()[2]

    assert len(cells(row)) == 8
    assert cells(row)[-1] == "left \\| right"


def test_write_replaces_only_the_block_and_is_idempotent(tmp_path: Path) -> None:
    path = stale_file(tmp_path)

    assert main(["--write", str(path)]) == 0
    first = path.read_text()
    assert main(["--write", str(path)]) == 0

    assert path.read_text() == first
    assert first == f"{BEFORE}{START_MARKER}\n{catalog_markdown()}{END_MARKER}{AFTER}"
    assert replace_block(first, catalog_markdown()) == first
    assert main(["--check", str(path)]) == 0


def test_check_fails_on_a_stale_file_and_leaves_it_alone(tmp_path: Path) -> None:
    path = stale_file(tmp_path)
    before = path.read_text()

    result = subprocess.run(
        [sys.executable, "-m", "metrics.docs", "--check", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )

    assert result.returncode == 1
    assert result.stderr == (
        f"error: {path}: the metric catalog table is stale; "
        f"run `python -m metrics.docs --write {path}`\n"
    )
    assert path.read_text() == before


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("no markers at all\n", "no <!-- metric-catalog:start -->"),
        (f"{START_MARKER}\n", "no <!-- metric-catalog:start -->"),
        (f"{END_MARKER}\n{START_MARKER}\n", "comes before"),
        (f"{START_MARKER}\n{END_MARKER}\n{START_MARKER}\n{END_MARKER}\n", "more than one"),
    ],
)
def test_bad_markers_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, problem: str
) -> None:
    path = tmp_path / "README.md"
    path.write_text(text)

    with pytest.raises(MarkerError, match=problem):
        replace_block(text, catalog_markdown())
    assert main(["--write", str(path)]) == 1
    assert problem in capsys.readouterr().err
    assert path.read_text() == text


def test_the_generator_does_not_import_the_engine() -> None:
    code = (
        "import sys, metrics.docs\n"
        "engine = [m for m in sys.modules if m.split('.')[0] == 'engine']\n"
        "assert not engine, engine\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=30)
