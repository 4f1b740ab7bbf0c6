"""`dagwatch metrics catalog`, run as a user runs it: no DAGWATCH_HOME, no metastore."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from metrics import CATALOG
from tests.helpers import run_cli

COLUMNS = [
    "name", "type", "unit", "labels", "legacy_name", "prometheus_name", "when_gone", "help"
]  # fmt: skip


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    """No DAGWATCH_HOME and an empty HOME. The unknown key is a tripwire: loading the
    configuration (the way to the home and the metastore) would fail with exit 2."""
    home = tmp_path / "user_home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "DAGWATCH__CORE__NO_SUCH_KEY": "1",
    }


def test_the_tripwire_stops_verbs_that_load_the_configuration(bare_env):
    result = run_cli("config", "list", env=bare_env)

    assert result.returncode == 2
    assert "unknown configuration key 'core.no_such_key'" in result.stderr


def catalog(*args: str, env: dict[str, str]) -> str:
    result = run_cli("metrics", "catalog", *args, env=env)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stderr == ""
    return result.stdout


def test_json_lists_every_metric_once_with_its_prometheus_name(bare_env):
    rows = json.loads(catalog("--output", "json", env=bare_env))

    assert [row["name"] for row in rows] == [metric.name for metric in CATALOG]
    assert all(list(row) == COLUMNS for row in rows)
    assert {row["name"]: row["prometheus_name"] for row in rows} == {
        metric.name: metric.prometheus_name for metric in CATALOG
    }
    finish = next(row for row in rows if row["name"] == "ti.finish")
    assert finish["legacy_name"] == "ti.finish.{dag_id}.{task_id}.{state}"
    assert finish["labels"] == "dag_id,task_id,state"
    assert list(Path(bare_env["HOME"]).iterdir()) == []  # no ~/dagwatch created


def test_table_has_a_header_and_a_row_per_metric(bare_env):
    lines = catalog(env=bare_env).splitlines()

    assert [cell.strip() for cell in lines[0].split("|")] == COLUMNS
    assert set(lines[1]) <= {"-", "+"}
    assert len(lines) == 2 + len(CATALOG)
    finish = next(line for line in lines if line.split("|")[0].strip() == "ti.finish")
    assert [cell.strip() for cell in finish.split("|")] == [
        "ti.finish",
        "counter",
        "",
        "dag_id,task_id,state",
        "ti.finish.{dag_id}.{task_id}.{state}",
        "dagwatch_ti_finish_total",
        "",
        "Task attempts finished, by final state.",
    ]
    gauge = next(line for line in lines if line.split("|")[0].strip() == "ti.running")
    assert gauge.split("|")[6].strip() == "zero"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "No such option '--bogus'"),
        (["--output", "xml"], "'xml' is not one of 'table', 'json'"),
        (["extra"], "Got unexpected extra argument (extra)"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(bare_env, args, message):
    result = run_cli("metrics", "catalog", *args, env=bare_env)

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: dagwatch metrics catalog: ")
    assert message in result.stderr
