"""Targets, Apprise delivery to real loopback receivers, and AppriseNotifier as a callback,
on its own and in DAG runs through the real scheduler."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from alerts import AppriseNotifier, notifiers
from alerts.delivery import deliver
from alerts.dispatcher import Dispatcher
from alerts.routes import run_link
from alerts.targets import Target
from engine import secrets
from engine.sdk.connections import Connection
from engine.store.connections import add_connection
from engine.store.models import Base, CallbackRecord
from tests.alerts.conftest import T0, alert_rows
from tests.integration import test_scheduler_loop as loop

TOKEN = "tok-8d1f6a0c2b9e"

loop_config = loop.loop_config
ledger = loop.ledger
add_dag = loop.add_dag


def test_an_env_reference_resolves_and_a_missing_variable_is_named(config, receiver):
    target = Target(("env:ONCALL_HOOK",))

    with pytest.raises(notifiers.NotifierError) as missing:
        notifiers.build_apprise(target, config, environ={})
    built = notifiers.build_apprise(target, config, environ={"ONCALL_HOOK": receiver.url(TOKEN)})

    assert str(missing.value) == "environment variable ONCALL_HOOK (for env:ONCALL_HOOK) is not set"
    assert len(built) == 1
    assert secrets.redact(f"posting to {receiver.url(TOKEN)}") == "posting to ***"
    assert TOKEN not in secrets.redact(f"http://127.0.0.1:{receiver.port}/{TOKEN}")


@pytest.mark.parametrize(
    "fields",
    [
        {"conn_type": "http", "extra": {"urls": ["URL"]}},
        {"conn_type": "http", "extra": {"urls": "URL, URL2"}},
        {"conn_type": "apprise", "password": "URL"},
    ],
    ids=["extra-list", "extra-string", "apprise-password"],
)
def test_a_connection_from_the_environment_holds_the_urls(config, receiver, monkeypatch, fields):
    text = json.dumps(fields).replace("URL2", receiver.url("second")).replace("URL", receiver.url())
    monkeypatch.setenv("DAGWATCH_CONN_ONCALL", text)

    delivery = deliver(Target(conn_id="oncall"), "t", "b", "info", config)

    assert delivery.ok, delivery.error
    expected = ["/hook", "/second"] if "URL2" in json.dumps(fields) else ["/hook"]
    assert sorted(post.path for post in receiver.posts) == expected


def test_a_connection_uri_can_be_the_apprise_url_itself(config, receiver, monkeypatch):
    monkeypatch.setenv("DAGWATCH_CONN_HOOK", f"json://bot:{TOKEN}@127.0.0.1:{receiver.port}/a/b")

    delivery = deliver(Target(conn_id="hook"), "t", "b", "info", config)

    assert delivery.ok, delivery.error
    assert [post.path for post in receiver.posts] == ["/a/b"]
    assert secrets.redact(f"password {TOKEN}") == "password ***"


def test_a_metastore_connection_holds_the_urls_encrypted(store, alerts_config, receiver):
    config = alerts_config()
    with store.session() as session:
        connection = Connection("pager", conn_type="apprise", password=receiver.url(TOKEN))
        add_connection(session, connection, config=config)

    assert deliver(Target(conn_id="pager"), "t", "b", "info", config).ok
    assert [post.path for post in receiver.posts] == [f"/{TOKEN}"]
    broken = deliver(Target(conn_id="nowhere"), "t", "b", "info", config)
    assert broken.error == "Connection 'nowhere' does not exist"


def test_a_connection_without_any_url_is_a_clear_error(config, monkeypatch):
    monkeypatch.setenv("DAGWATCH_CONN_EMPTY", json.dumps({"conn_type": "apprise"}))

    delivery = deliver(Target(conn_id="empty"), "t", "b", "info", config)

    assert not delivery.ok
    assert delivery.error == "connection 'empty' (type apprise) has no URL in its password"


def test_a_tag_of_the_apprise_config_file_picks_its_entries(config, receiver, tmp_path):
    path = tmp_path / "apprise.yml"
    path.write_text(
        "urls:\n"
        f"  - {receiver.url('oncall')}:\n      tag: oncall\n"
        f"  - {receiver.url('other')}:\n      tag: other\n"
    )
    config = config.with_overrides(alerts__apprise_config=str(path))

    sent = deliver(Target(tag="oncall"), "t", "b", "warning", config)
    unmatched = deliver(Target(tag="nobody"), "t", "b", "warning", config)
    unconfigured = deliver(
        Target(tag="oncall"), "t", "b", "info", config.with_overrides(alerts__apprise_config="")
    )

    assert sent.ok and sent.channels == ["json"]
    assert [post.path for post in receiver.posts] == ["/oncall"]
    assert not unmatched.ok and unmatched.error.startswith("no channel matched tag 'nobody'")
    assert unconfigured.error == (
        "tag 'oncall' needs alerts.apprise_config (an Apprise configuration file)"
    )


def test_mail_reaches_an_smtp_server(config, smtp_sink):
    delivery = deliver(
        Target((smtp_sink.url(),)), "[dagwatch] etl.load failed", "Run: r1", "failure", config
    )

    assert delivery.ok, delivery.error
    assert delivery.channels == ["mailto"]
    (message,) = smtp_sink.messages
    assert message["To"] == "oncall@example.com"
    assert smtp_sink.texts() == ["[dagwatch] etl.load failed\nRun: r1"]


def test_one_failed_channel_fails_the_delivery_and_names_it(config, receiver, dead_url):
    delivery = deliver(Target((receiver.url(), dead_url)), "t", "b", "info", config)

    assert not delivery.ok
    assert delivery.channels == ["json"]
    assert (
        delivery.error
        == "JSON: A Connection error occurred sending JSON notification to 127.0.0.1."
    )
    assert len(receiver.posts) == 1  # the healthy channel still got it


def test_an_invalid_url_is_named_without_being_shown(config):
    delivery = deliver(Target(("nosuchservice://abc",)), "t", "b", "info", config)

    assert not delivery.ok
    assert delivery.error == "inline URL #1 is not a valid Apprise URL"


def test_importing_the_plugin_or_the_notifier_class_does_not_import_apprise():
    code = (
        "import sys, alerts.plugin, alerts.listener, alerts.dispatcher\n"
        "from alerts import AppriseNotifier\n"
        "AppriseNotifier(urls='json://example.com/x', title='{{ dag_id }}')\n"
        "print('apprise' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_a_notifier_checks_its_arguments_when_the_dag_is_defined():
    with pytest.raises(ValueError, match="needs urls, conn_id or tag"):
        AppriseNotifier()
    with pytest.raises(ValueError, match="AppriseNotifier title: invalid Jinja template"):
        AppriseNotifier(urls="env:X", title="{{ dag_id ")
    with pytest.raises(ValueError, match="notify_type 'loud'"):
        AppriseNotifier(urls="env:X", notify_type="loud")
    notifier = AppriseNotifier(urls=[f"json://h/{TOKEN}", "env:HOOK"], conn_id="pager")
    assert repr(notifier) == "AppriseNotifier(env:HOOK, 1 inline URL(s), connection pager)"


def dag_context(state: str = "failed") -> dict:
    run = SimpleNamespace(dag_id="etl", run_id="scheduled__1", state=state)
    return {"dag": SimpleNamespace(dag_id="etl"), "dag_run": run, "run_id": run.run_id,
            "reason": "task load failed"}  # fmt: skip


def test_a_notifier_call_writes_a_pending_row_with_the_url_sealed(store, alerts_config, receiver):
    config = alerts_config()
    notifier = AppriseNotifier(urls=receiver.url(f"hooks/{TOKEN}"))

    alert_id = notifier(dag_context())
    again = notifier(dag_context())

    (row,) = alert_rows(store)
    assert (row.id, again) == (alert_id, None)  # one row per occurrence
    assert (row.event, row.route, row.status, row.severity) == (
        "dag_run_failed",
        "notifier",
        "pending",
        "error",
    )
    assert (row.dag_id, row.run_id, row.task_id) == ("etl", "scheduled__1", None)
    assert row.payload["title"] == "[dagwatch] DAG etl run scheduled__1 failed"
    assert row.payload["target"]["urls"] == [] and row.payload["target"]["sealed_urls"]
    assert TOKEN not in json.dumps(row.payload) and TOKEN not in row.fingerprint

    assert Dispatcher(config, store).run_once().sent == 1
    (post,) = receiver.posts
    assert post.path == f"/hooks/{TOKEN}"
    assert post.title == "[dagwatch] DAG etl run scheduled__1 failed"
    assert f"Link: {run_link(config, 'etl', 'scheduled__1')}" in post.message


def test_env_and_connection_references_are_stored_as_references(store, alerts_config):
    alerts_config()
    AppriseNotifier(urls="env:ONCALL_HOOK", conn_id="pager", tag="oncall")(dag_context("success"))

    (row,) = alert_rows(store)
    assert row.event == "dag_run_succeeded"
    assert row.payload["notify_type"] == "success"
    assert row.payload["target"] == {
        "urls": ["env:ONCALL_HOOK"],
        "sealed_urls": None,
        "conn_id": "pager",
        "tag": "oncall",
    }


def test_an_sla_miss_callback_context_becomes_sla_missed(store, alerts_config):
    alerts_config()
    context = dag_context("running") | {
        "reason": "task load missed its SLA",
        "sla_misses": [{"kind": "task_sla", "task_id": "load", "deadline": T0, "state": None}],
    }
    notifier = AppriseNotifier(
        urls="env:HOOK", title="late: {{ dag_id }}.{{ task_id }} due {{ deadline }}"
    )

    notifier(context)

    (row,) = alert_rows(store)
    assert (row.event, row.task_id) == ("sla_missed", "load")
    assert row.payload["title"] == f"late: etl.load due {T0.isoformat()}"
    assert f"Missed: task_sla load, due {T0.isoformat()}" in row.payload["body"]
    assert "Message: task load missed its SLA" in row.payload["body"]


def test_airflow_style_sla_miss_callback_arguments_are_understood(store, alerts_config):
    alerts_config()
    slas = [SimpleNamespace(task_id="load", run_id="scheduled__1", deadline=T0, kind="task_sla")]

    AppriseNotifier(urls="env:HOOK")(SimpleNamespace(dag_id="etl"), "load", "", slas, [])

    (row,) = alert_rows(store)
    assert (row.event, row.dag_id, row.run_id, row.task_id) == (
        "sla_missed",
        "etl",
        "scheduled__1",
        "load",
    )


def test_with_alerts_disabled_a_notifier_writes_nothing(store, alerts_config):
    alerts_config(alerts__enabled=False)

    assert AppriseNotifier(urls="env:HOOK")(dag_context()) is None
    assert alert_rows(store) == []


NOTIFY_DAG = """
from alerts import AppriseNotifier

NOTIFY = AppriseNotifier(urls="{url}")

def boom():
    raise ValueError("bad rows")

with DAG("notify_me", schedule=None):
    PythonOperator(task_id="load", python_callable=boom, retries=0, on_failure_callback=NOTIFY)
"""


def test_a_notifier_as_on_failure_callback_through_the_scheduler(
    store, loop_config, add_dag, receiver
):
    add_dag("notify_me", NOTIFY_DAG.format(url=receiver.url(f"hooks/{TOKEN}")))
    run_id = loop.trigger(store, "notify_me")

    loop.drain(store, loop_config)  # the dispatcher service delivers before it stops

    (post,) = receiver.posts
    assert post.title == "[dagwatch] notify_me.load failed"
    assert post.type == "failure"
    lines = post.message.splitlines()
    for line in (
        "DAG: notify_me",
        "Task: load",
        f"Run: {run_id}",
        "State: failed",
        "Attempt: 1 of 1",
        "Error: ValueError: bad rows",
        f"Link: {run_link(loop_config, 'notify_me', run_id)}",
    ):
        assert line in lines
    (row,) = alert_rows(store)
    assert (row.event, row.route, row.status, row.task_id) == (
        "task_failed",
        "notifier",
        "sent",
        "load",
    )
    with store.session() as session:
        (callback,) = session.scalars(select(CallbackRecord)).all()
        assert (callback.kind, callback.status) == ("on_failure_callback", "success")
        for table in Base.metadata.sorted_tables:  # the token is nowhere in the metastore
            assert TOKEN not in repr(session.execute(select(table)).all()), table.name
    for path in Path(loop_config["logging.base_log_folder"]).rglob("*"):
        assert not path.is_file() or TOKEN not in path.read_text(errors="replace"), path


# retry_delay > 0: the local executor ignores a retry queued while the first attempt's
# process is still running its callbacks, and the task would stay queued.
FLAKY_DAG = """
from alerts import AppriseNotifier

NOTIFY = AppriseNotifier(urls="URL", title="{{ task_id }}: {{ state }} #{{ attempt }}")
MARK = "__MARK_DIR__"

def flaky():
    if not os.path.exists(MARK + "/mark"):
        open(MARK + "/mark", "w").close()
        raise RuntimeError("first attempt fails")

with DAG("flaky_notify", schedule=None):
    PythonOperator(task_id="load", python_callable=flaky, retries=1,
                   retry_delay=timedelta(seconds=2), on_retry_callback=NOTIFY,
                   on_success_callback=[NOTIFY])
"""


def test_the_notifier_tells_retries_from_successes(store, loop_config, add_dag, receiver, home):
    add_dag(
        "flaky_notify", FLAKY_DAG.replace("URL", receiver.url()).replace("__MARK_DIR__", str(home))
    )
    loop.trigger(store, "flaky_notify")

    loop.drain(store, loop_config)

    assert sorted(post.title for post in receiver.posts) == [
        "load: success #2",
        "load: up_for_retry #1",
    ]
    events = sorted((row.event, row.status) for row in alert_rows(store))
    assert events == [("task_retry", "sent"), ("task_succeeded", "sent")]


def test_a_notifier_row_is_delivered_with_retries_like_any_other(store, alerts_config, receiver):
    config = alerts_config(alerts__retry_delay=1)
    receiver.script = [503]
    AppriseNotifier(urls=receiver.url(), body="{{ reason }}")(dag_context())
    dispatcher = Dispatcher(config, store)

    now = datetime.now(UTC)
    first = dispatcher.run_once(now)
    second = dispatcher.run_once(now + timedelta(seconds=2))

    assert (first.retried, second.sent) == (1, 1)
    assert [(post.status, post.message) for post in receiver.posts] == [
        (503, "task load failed"),
        (200, "task load failed"),
    ]


LIFECYCLE_DAG = """
from alerts import AppriseNotifier

NOTIFY = AppriseNotifier(urls="URL")

with DAG("lifecycle", schedule=None, on_success_callback=[NOTIFY]):
    EmptyOperator(task_id="only", on_execute_callback=NOTIFY)
"""


def test_the_notifier_as_dag_and_on_execute_callback(store, loop_config, add_dag, receiver):
    add_dag("lifecycle", LIFECYCLE_DAG.replace("URL", receiver.url()))
    run_id = loop.trigger(store, "lifecycle")

    loop.drain(store, loop_config)

    titles = sorted(post.title for post in receiver.posts)
    assert titles == [
        f"[dagwatch] DAG lifecycle run {run_id} succeeded",
        "[dagwatch] lifecycle.only started",
    ]
    events = sorted((row.event, row.task_id) for row in alert_rows(store))
    assert events == [("dag_run_succeeded", None), ("task_started", "only")]


@pytest.mark.parametrize(
    ("extra", "try_number", "event"),
    [
        ({}, 1, "task_started"),
        ({"exception": None}, 1, "task_succeeded"),
        ({"exception": "ValueError: x"}, 1, "task_retry"),
        ({"exception": "ValueError: x"}, 2, "task_failed"),
    ],
)
def test_without_its_row_a_task_callback_is_told_by_its_context(
    store, alerts_config, extra, try_number, event
):
    alerts_config()
    ti = SimpleNamespace(dag_id="etl", run_id="r1", task_id="load", try_number=try_number,
                         max_tries=1, map_index=-1)  # fmt: skip

    AppriseNotifier(urls="env:HOOK")({"ti": ti, "run_id": "r1", **extra})

    (row,) = alert_rows(store)
    assert (row.event, row.task_id, row.payload["attempt"]) == (event, "load", try_number)
    assert row.payload["max_attempts"] == 2
