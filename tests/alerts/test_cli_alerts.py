"""`dagwatch alerts test|list|resend|dispatch`, run as a user runs them (a subprocess)."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from alerts import outbox
from alerts.events import Event
from tests.alerts.conftest import T0, alert_rows, delivery_rows, raise_alert
from tests.helpers import run_cli, start_cli

TOKEN = "cli-secret-7f3a9d21"
COLUMNS = [
    "id",
    "created_at",
    "event",
    "severity",
    "route",
    "dag_id",
    "run_id",
    "task_id",
    "status",
    "attempts",
    "count",
    "possible_duplicate",
    "last_error",
]


@pytest.fixture
def env(store, cli_env):
    """The CLI's environment, pointing at the test's metastore."""
    url = store.url.render_as_string(hide_password=False)
    return {**cli_env, "DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": url}


def with_routes(env: dict, **routes: dict) -> dict:
    """The routes, paging alert by alert as `alerts_config` writes them (group_by empty)."""
    return {**env, "DAGWATCH__ALERTS__ROUTES": json.dumps(routes), "DAGWATCH__ALERTS__GROUP_BY": ""}


def test_alerts_test_sends_now_and_never_prints_the_url(env, receiver):
    result = run_cli("alerts", "test", receiver.url(f"hooks/{TOKEN}"), env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("delivered to 1 inline URL(s) (json) in ")
    (post,) = receiver.posts
    assert post.path == f"/hooks/{TOKEN}"
    assert post.title == "[dagwatch] test notification"
    assert "DAG: example_dag" in post.message
    assert TOKEN not in result.stdout + result.stderr


def test_alerts_test_of_a_dead_channel_exits_1_with_the_error(env, dead_url):
    result = run_cli("alerts", "test", dead_url, env=env)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "error: not delivered to 1 inline URL(s): "
        "JSON: A Connection error occurred sending JSON notification to 127.0.0.1."
    )


def test_alerts_test_through_a_route_with_an_env_reference(env, smtp_sink):
    routes = with_routes(env, oncall={"urls": ["env:ONCALL_MAIL"]})

    sent = run_cli(
        "alerts", "test", "--route", "oncall", env={**routes, "ONCALL_MAIL": smtp_sink.url()}
    )
    unset = run_cli("alerts", "test", "--route", "oncall", env=routes)
    unknown = run_cli("alerts", "test", "--route", "nope", env=routes)

    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("delivered to env:ONCALL_MAIL (mailto) in ")
    (text,) = smtp_sink.texts()
    assert text.startswith("[dagwatch] test notification\n")
    assert (unset.returncode, unset.stderr.strip()) == (
        1,
        "error: not delivered to env:ONCALL_MAIL: "
        "environment variable ONCALL_MAIL (for env:ONCALL_MAIL) is not set",
    )
    assert (unknown.returncode, unknown.stderr.strip()) == (
        2,  # a --route that is not configured: a usage error
        "error: no route named 'nope' (configured routes: oncall)",
    )


@pytest.mark.parametrize("args", [(), ("json://h/x", "--route", "oncall")])
def test_alerts_test_needs_exactly_one_target(env, args):
    result = run_cli("alerts", "test", *args, env=env)

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: dagwatch alerts test: give either an Apprise URL or --route NAME"
    )


def test_alerts_list_filters_and_prints_json_with_the_table_columns(store, env, alerts_config):
    config = alerts_config(alerts__routes={"oncall": {"urls": ["env:X"]}})
    raise_alert(store, config, dag_id="billing", task_id="load")
    raise_alert(store, config, dag_id="billing", task_id="load", event=Event.TASK_RETRY)
    (other,) = raise_alert(store, config, dag_id="etl", task_id="extract")
    with store.session() as session:
        outbox.mark(session, [other], status=outbox.FAILED, reason="JSON: error=500.")

    everything = run_cli("alerts", "list", "--output", "json", env=env)
    failed = run_cli("alerts", "list", "--status", "failed", "--output", "json", env=env)
    billing = run_cli("alerts", "list", "--dag-id", "billing", "--limit", "1", env=env)
    bad = run_cli("alerts", "list", "--status", "lost", env=env)

    rows = json.loads(everything.stdout)
    assert [list(row) for row in rows] == [COLUMNS] * 2  # task_retry: no route wants it
    assert [(r["dag_id"], r["event"], r["status"]) for r in rows] == [
        ("etl", "task_failed", "failed"),
        ("billing", "task_failed", "pending"),
    ]
    assert rows[0]["last_error"] == "JSON: error=500." and rows[0]["count"] == 1
    assert [r["id"] for r in json.loads(failed.stdout)] == [other]
    header, _rule, line = billing.stdout.splitlines()
    assert header.split(" | ")[0].strip() == "id" and "billing" in line and "load" in line
    assert bad.returncode == 2


def test_alerts_resend_requeues_a_failed_alert_and_names_an_unknown_one(store, env, alerts_config):
    config = alerts_config(alerts__routes={"oncall": {"urls": ["env:X"]}})
    (alert_id,) = raise_alert(store, config)
    with store.session() as session:
        outbox.mark(session, [alert_id], status=outbox.FAILED, reason="gave up")

    resent = run_cli("alerts", "resend", str(alert_id), env=env)
    unknown = run_cli("alerts", "resend", "999", env=env)

    assert (resent.returncode, resent.stdout.strip()) == (
        0,
        f"alert {alert_id} queued for delivery",
    )
    (row,) = alert_rows(store)
    assert (row.status, row.attempts, row.last_error) == ("pending", 0, None)
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "error: alert 999 does not exist")


def test_alerts_dispatch_once_delivers_what_is_due(store, env, alerts_config, receiver):
    routes = {"oncall": {"urls": [receiver.url(f"hooks/{TOKEN}")]}}
    config = alerts_config(alerts__routes=routes)
    (alert_id,) = raise_alert(store, config)

    result = run_cli(
        "alerts", "dispatch", "--once", "--output", "json", env=with_routes(env, **routes)
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sent"] == 1
    assert [post.title for post in receiver.posts] == ["[dagwatch] etl.load failed"]
    assert [d.status for d in delivery_rows(store, alert_id)] == ["sent"]
    assert TOKEN not in result.stdout + result.stderr


def test_alerts_dispatch_runs_until_sigterm(store, env, alerts_config, receiver):
    routes = {"oncall": {"urls": [receiver.url()]}}
    config = alerts_config(alerts__routes=routes)
    process = start_cli(
        "alerts",
        "dispatch",
        env=with_routes(env, **routes),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        raise_alert(store, config, now=T0)
        receiver.wait_for(1, timeout=20)  # picked up by the running loop
        raise_alert(store, config, task_id="extract", now=T0)
        receiver.wait_for(2, timeout=20)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, err
    assert out.splitlines()[0].startswith("alert dispatcher started: metastore ")
    assert out.splitlines()[-1] == "alert dispatcher stopped"
    assert sorted(post.title for post in receiver.posts) == [
        "[dagwatch] etl.extract failed",
        "[dagwatch] etl.load failed",
    ]
    assert {row.status for row in alert_rows(store)} == {"sent"}
