"""The `dags` and `tasks` verbs through a real subprocess, as a user runs them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import run_cli

EXAMPLES = [
    "example_etl",
    "example_fan_out_in",
    "example_branching",
    "example_flaky_retry",
    "example_sensor",
    "example_sla",
    "example_pool_limited",
    "example_mapping",
]

BROKEN = "from engine import DAG\nraise ValueError('broken on purpose')\n"


@pytest.fixture(scope="module")
def migrated_home(tmp_path_factory):
    """One home with a migrated metastore, the examples and one broken file."""
    home = tmp_path_factory.mktemp("home")
    (home / "dags").mkdir()
    (home / "dags" / "broken_dag.py").write_text(BROKEN)
    env = {"DAGWATCH_HOME": str(home), "PATH": "/usr/bin:/bin"}
    result = run_cli("db", "migrate", env=env)
    assert result.returncode == 0, result.stderr
    return home, env


def test_reserialize_lists_dags_and_import_errors(migrated_home):
    _, env = migrated_home
    result = run_cli("dags", "reserialize", "--output", "json", env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dags_found"] >= len(EXAMPLES) and summary["import_errors"] == 1

    listing = json.loads(run_cli("dags", "list", "--output", "json", env=env).stdout)
    assert {row["dag_id"] for row in listing} >= set(EXAMPLES)
    assert {"dag_id", "filename", "owner", "schedule", "is_paused", "tags"} <= set(listing[0])
    etl = next(row for row in listing if row["dag_id"] == "example_etl")
    assert etl["schedule"] == "@daily" and etl["owner"] == "data-eng"

    errors = json.loads(run_cli("dags", "list-import-errors", "-o", "json", env=env).stdout)
    assert [Path(e["filename"]).name for e in errors] == ["broken_dag.py"]
    assert "broken on purpose" in errors[0]["error"]


@pytest.mark.parametrize("dag_id", EXAMPLES)
def test_every_example_dag_passes_dags_test(migrated_home, dag_id):
    _, env = migrated_home
    result = run_cli("dags", "test", dag_id, "--logical-date", "2026-03-02", env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"run test__2026-03-02T00:00:00+00:00 of {dag_id}" in result.stdout
    assert result.stdout.rstrip().endswith(": success")


def test_dags_test_reports_task_outcomes_and_writes_logs(migrated_home):
    home, env = migrated_home
    result = run_cli("dags", "test", "example_etl", "--logical-date", "2026-03-03", env=env)
    assert result.returncode == 0, result.stderr
    for task_id in ("extract", "transform", "load"):
        assert any(line.split()[:2] == [task_id, "success"] for line in result.stdout.splitlines())
    log = home / "logs/example_etl/test__2026-03-03T00_00_00+00_00/load/attempt=1.log"
    assert "loading total 60 for 2026-03-03" in log.read_text()


def test_dags_show_prints_tasks_edges_and_labels(migrated_home):
    _, env = migrated_home
    # `show` reads the metastore: parse first, whatever ran before on this worker
    assert run_cli("dags", "reserialize", env=env).returncode == 0
    result = run_cli("dags", "show", "example_branching", env=env)
    assert result.returncode == 0, result.stderr
    assert "choose_path" in result.stdout
    assert "-> full_load  (weekday)" in result.stdout


def test_tasks_test_runs_one_task_and_prints_its_log(migrated_home):
    _, env = migrated_home
    result = run_cli("tasks", "test", "example_etl", "extract", env=env)
    assert result.returncode == 0, result.stderr
    assert "extracted" in result.stdout
    assert result.stdout.rstrip().endswith("extract: success")


def test_tasks_test_of_a_mapped_task_is_one_clear_line(migrated_home):
    _, env = migrated_home
    result = run_cli("tasks", "test", "example_mapping", "load", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: task 'load' is mapped: its instances exist only in a run; "
        "use `dagwatch dags test example_mapping`"
    ]


def test_unknown_dag_is_one_clear_line_and_exit_1(migrated_home):
    _, env = migrated_home
    result = run_cli("dags", "test", "no_such_dag", env=env)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no_such_dag" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dags", "test", "example_etl", "--conf", "{not json"], "not valid JSON"),
        (["dags", "test", "example_etl", "--conf", "[1]"], "must be a JSON object"),
        (["dags", "test", "example_etl", "--logical-date", "yesterday"], "ISO 8601"),
        (["dags", "list", "--output", "yaml"], "'yaml' is not one of"),
    ],
)
def test_bad_usage_exits_2_with_one_line(migrated_home, args, message):
    _, env = migrated_home
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_failed_run_exits_1(migrated_home, tmp_path):
    home, env = migrated_home
    (home / "dags" / "fails.py").write_text(
        "from engine import DAG, BashOperator\n"
        "with DAG('always_fails', schedule=None):\n"
        "    BashOperator(task_id='nope', bash_command='exit 3')\n"
    )
    result = run_cli("dags", "test", "always_fails", env=env)
    assert result.returncode == 1
    assert "non-zero exit code 3" in result.stdout
    assert "always_fails failed" in result.stderr


RESCHEDULING = """
import os
from engine import DAG, PythonSensor

COUNTER = os.path.join(os.path.dirname(__file__), "pokes")


def second_poke():
    with open(COUNTER, "a") as out:
        out.write("x")
    return os.path.getsize(COUNTER) >= 2


with DAG("rescheduling", schedule=None):
    PythonSensor(task_id="never", python_callable=lambda: False, mode="reschedule",
                 poke_interval=600)
    PythonSensor(task_id="second", python_callable=second_poke, mode="reschedule",
                 poke_interval=0.5)
"""


def test_a_rescheduled_sensor_through_tasks_test_and_dags_test(tmp_path):
    """`tasks test` pokes once and reports the next poke; `dags test` waits and pokes again."""
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "rescheduling.py").write_text(RESCHEDULING)
    env = {"DAGWATCH_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    assert run_cli("db", "migrate", env=env).returncode == 0

    once = run_cli("tasks", "test", "rescheduling", "never", env=env)
    assert once.returncode == 0, once.stderr
    assert "never: up_for_reschedule (next poke at " in once.stdout.splitlines()[-1]

    (tmp_path / "dags" / "rescheduling.py").write_text(
        RESCHEDULING.replace("poke_interval=600", "timeout=0")
    )
    run = run_cli("dags", "test", "rescheduling", "--logical-date", "2026-03-02", env=env)
    assert re.search(r"^  waiting 0\.\d s to poke second$", run.stdout, re.MULTILINE)
    outcomes = [line.split()[:2] for line in run.stdout.splitlines() if line.startswith("  ")]
    assert ["second", "up_for_reschedule"] in outcomes and ["second", "success"] in outcomes
    assert ["never", "failed"] in outcomes  # timeout=0: timed out at its first poke
    assert run.returncode == 1  # the run failed with `never`
