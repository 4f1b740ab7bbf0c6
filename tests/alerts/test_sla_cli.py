"""`dagwatch sla list`: recorded misses as a table or JSON, newest first."""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from engine.cli import CliContext  # first: it loads the plugins' verbs, alerts.sla_cli too
from engine.store.models import SlaMiss
from tests.helpers import run_cli

T0 = datetime(2026, 1, 10, 12, tzinfo=UTC)
sla_cli = importlib.import_module("alerts.sla_cli")  # after engine.cli (a circular import)


@pytest.fixture
def invoke(store, cli_env):
    """Run `dagwatch sla ARGS` in-process against the test's metastore."""
    url = store.url.render_as_string(hide_password=False)
    env = {**cli_env, "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": url}

    def _invoke(*args: str):
        group = sla_cli.sla
        return CliRunner().invoke(group, list(args), obj=CliContext(env), catch_exceptions=False)

    return _invoke


@pytest.fixture
def recorded(store):
    with store.session() as session:
        session.add_all(
            [
                SlaMiss(kind="task_sla", dag_id="etl", run_id="r1", task_id="load",
                        deadline=T0, detected_at=T0 + timedelta(seconds=1), state="running",
                        notified=True),
                SlaMiss(kind="dag_deadline", dag_id="etl", run_id="r1", task_id="",
                        deadline=T0 + timedelta(minutes=5), detected_at=T0 + timedelta(minutes=5),
                        state="running", notified=False),
                SlaMiss(kind="task_sla", dag_id="billing", run_id="b7", task_id="charge",
                        deadline=T0, detected_at=T0 + timedelta(minutes=2), state="queued",
                        notified=True),
            ]
        )  # fmt: skip


def test_list_as_json_is_newest_first_with_the_table_columns(invoke, recorded):
    result = invoke("list", "--output", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {
            "kind": "dag_deadline",
            "dag_id": "etl",
            "run_id": "r1",
            "task_id": None,
            "deadline": "2026-01-10T12:05:00+00:00",
            "detected_at": "2026-01-10T12:05:00+00:00",
            "state": "running",
            "notified": False,
        },
        {
            "kind": "task_sla",
            "dag_id": "billing",
            "run_id": "b7",
            "task_id": "charge",
            "deadline": "2026-01-10T12:00:00+00:00",
            "detected_at": "2026-01-10T12:02:00+00:00",
            "state": "queued",
            "notified": True,
        },
        {
            "kind": "task_sla",
            "dag_id": "etl",
            "run_id": "r1",
            "task_id": "load",
            "deadline": "2026-01-10T12:00:00+00:00",
            "detected_at": "2026-01-10T12:00:01+00:00",
            "state": "running",
            "notified": True,
        },
    ]


def test_list_filters_by_dag_and_limits(invoke, recorded):
    result = invoke("list", "--dag-id", "etl", "--limit", "1", "-o", "json")
    assert [(row["kind"], row["dag_id"]) for row in json.loads(result.output)] == [
        ("dag_deadline", "etl")
    ]


def test_list_as_a_table(invoke, recorded):
    lines = invoke("list", "--dag-id", "billing").output.splitlines()
    assert [cell.strip() for cell in lines[0].split("|")] == list(sla_cli.COLUMNS)
    assert [cell.strip() for cell in lines[2].split("|")] == [
        "task_sla",
        "billing",
        "b7",
        "charge",
        "2026-01-10T12:00:00+00:00",
        "2026-01-10T12:02:00+00:00",
        "queued",
        "True",
    ]
    assert len(lines) == 3


def test_an_empty_listing_and_bad_usage(invoke):
    assert invoke("list").output.strip() == "(no rows)"
    assert invoke("list", "-o", "json").output.strip() == "[]"
    bad = CliRunner().invoke(sla_cli.sla, ["list", "--limit", "-1"])
    assert bad.exit_code == 2


def test_the_dagwatch_command_has_the_sla_verbs(store, cli_env, recorded):
    url = store.url.render_as_string(hide_password=False)
    env = {**cli_env, "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": url}
    result = run_cli("sla", "list", "--dag-id", "billing", "--output", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert [(r["run_id"], r["task_id"]) for r in json.loads(result.stdout)] == [("b7", "charge")]
