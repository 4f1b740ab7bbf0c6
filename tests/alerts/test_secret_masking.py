"""Notifier URLs are masked in a process as soon as it loads the routes, and nothing a
delivery sends or records holds a secret this process knows (real loopback receivers)."""

from __future__ import annotations

import logging

import pytest

from alerts import plugin
from alerts.delivery import deliver
from alerts.dispatcher import Dispatcher
from alerts.targets import Target
from engine import hooks
from engine.masking import mask_secret, redact
from tests.alerts.conftest import alert_rows, free_port, raise_alert


def _install(config, **overrides):
    configured = config.with_overrides(**overrides)
    hooks.install(configured, plugins=[plugin])
    return configured


@pytest.mark.parametrize(
    ("routes", "environ", "secrets"),
    [
        ({"r": {"urls": ["json://u:inline-pa55@h/x"]}}, {}, ["inline-pa55"]),
        ({"r": {"urls": ["env:HOOK"]}}, {"HOOK": "json://h/x?token=env-t0k"}, ["env-t0k"]),
        (
            {"r": {"urls": ["env:HOOKS"]}},
            {"HOOKS": "json://a:first-pa55@h/x, mailto://b:second-pa55@mail.example.com"},
            ["first-pa55", "second-pa55"],
        ),
        (
            {"r": {"urls": ["tgram://123456789:AAHtelegramBotT0ken/12345"]}},
            {},
            ["123456789:AAHtelegramBotT0ken"],
        ),
    ],
)
def test_route_urls_are_masked_once_the_plugin_is_installed(
    config, monkeypatch, routes, environ, secrets
):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert all(redact(secret) == secret for secret in secrets)  # nothing known before

    _install(config, alerts__routes=routes)

    assert all(redact(f"<{secret}>") == "<***>" for secret in secrets)


def test_the_fallback_urls_are_masked_whole_and_by_their_tokens(config):
    _install(config, alerts__fallback_urls="json://u:fb-pa55@h/x, slack://T0KEN-AAA/B0KEN-BBB/C")

    assert redact("json://u:fb-pa55@h/x or fb-pa55") == "*** or ***"
    assert redact("posting to slack://T0KEN-AAA/B0KEN-BBB/C") == "posting to ***"
    assert "B0KEN-BBB" not in redact("/T0KEN-AAA/B0KEN-BBB/")


def test_a_title_and_body_are_masked_on_their_way_out(config, receiver):
    mask_secret("body-s3cret")
    title, body = "boom: body-s3cret", "line 1\nValueError: body-s3cret\n"

    delivery = deliver(Target((receiver.url(),)), title, body, "failure", config)

    assert delivery.ok, delivery.error
    (post,) = receiver.posts
    assert (post.title, post.message) == ("boom: ***", "line 1\nValueError: ***")


def test_a_dead_channel_error_never_names_its_token(config, caplog):
    url = f"json://user:dead-t0ken-1@127.0.0.1:{free_port()}/dead-path-t0ken-2?token=dead-t0k-3"
    with caplog.at_level(logging.DEBUG):
        delivery = deliver(Target((url,)), "t", "b", "info", config, timeout=5)

    assert not delivery.ok
    assert "JSON" in caplog.text  # Apprise logged about it
    for secret in ("dead-t0ken-1", "dead-t0k-3", url):
        assert secret not in delivery.error
        assert secret not in caplog.text


def test_a_dispatched_alert_quoting_its_route_url_sends_and_keeps_it_masked(
    store, alerts_config, receiver
):
    url = receiver.url("hook").replace("://", "://u:rowroute-pa55@")
    config = alerts_config(alerts__routes={"oncall": {"urls": [url]}})
    raise_alert(store, config, exception=f"ConnectionError: cannot post to {url}")

    report = Dispatcher(config, store).run_once()

    assert report.sent == 1
    (row,) = alert_rows(store)
    assert row.payload["exception"] == "ConnectionError: cannot post to ***"
    (post,) = receiver.posts
    assert "rowroute-pa55" not in post.message
    assert "cannot post to ***" in post.message
