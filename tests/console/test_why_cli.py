"""`dagwatch dags failed-deps DAG_ID [RUN_ID]` and the details of `tasks failed-deps`,
through a real subprocess on the seeded metastore (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import pytest

from tests.console.seed_why import seed_why
from tests.helpers import run_cli


@pytest.fixture
def why(seeded, config):
    return seed_why(seeded, config)


def cli(env, *args: str):
    return run_cli(*args, env=env)


def test_a_run_behind_max_active_runs_names_the_run_in_the_way(why, store_env):
    result = cli(store_env, "dags", "failed-deps", "limited", "l2_queued")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "run limit: the run is queued, DAG 'limited' is at max_active_runs (1)"
    assert "running now (1 of 1): l1_running" in lines
    as_json = json.loads(
        cli(store_env, "dags", "failed-deps", "limited", "l2_queued", "-o", "json").stdout
    )
    assert as_json["kind"] == "max_active_runs" and as_json["subject"] == "run"
    assert [run["run_id"] for run in as_json["runs"]] == ["l1_running"]
    assert (as_json["dag_id"], as_json["run_id"]) == ("limited", "l2_queued")


def test_without_a_run_it_explains_the_dags_next_run(why, store_env):
    result = cli(store_env, "dags", "failed-deps", "limited", "-o", "json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["subject"] == "DAG" and found["kind"] == "max_active_runs"
    assert found["reason"].startswith("run l2_queued is queued: run limit")
    assert "run_id" not in found


def test_a_running_run_lists_what_waits(why, store_env):
    out = cli(store_env, "dags", "failed-deps", "limited", "l1_running").stdout
    assert out.splitlines()[0] == "running: 1 task instance(s) running, 0 queued"
    assert "  backup: pool 'db' is full: it needs 1 open slot(s)" in out
    assert "  publish: trigger rule all_success is not met yet: waiting for upstream load" in out


def test_tasks_failed_deps_names_the_pool_holders(why, store_env):
    result = cli(store_env, "tasks", "failed-deps", "limited", "l1_running", "backup")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "pool 'db' is full: it needs 1 open slot(s)"
    assert "holding the pool (longest first):" in lines
    holders = lines[lines.index("holding the pool (longest first):") + 1 :]
    assert holders[0].startswith("  limited / l1_running / load: running, 1 slot(s) of 'db' for ")
    assert holders[0].endswith(" for 20 min on worker-1")  # seeded 20 min before
    assert holders[1].startswith("  reports / r5_db / render: running, 1 slot(s) of 'db' for ")
    data = json.loads(
        cli(
            store_env, "tasks", "failed-deps", "limited", "l1_running", "backup", "-o", "json"
        ).stdout
    )
    assert [h["task_id"] for h in data["holders"]] == ["load", "render"]
    assert data["holders"][0]["held_s"] >= 1200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope",), "DAG 'nope' not found"),
        (("limited", "no_such_run"), "no_such_run"),
    ],
)
def test_an_unknown_dag_or_run_is_a_usage_error_in_one_line(why, store_env, args, message):
    result = cli(store_env, "dags", "failed-deps", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert "Traceback" not in result.stderr
