"""`dagwatch worker`'s bad usage: one line naming what is wrong, exit 2, nothing started."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queues", "a,b c"], "--queues 'a,b c': each comma-separated name must be"),
        (["--queues", ""], "--queues '': each comma-separated name must be"),
        (["--queues", "a,,b"], "--queues 'a,,b': each comma-separated name must be"),
        (["--concurrency", "0"], "--concurrency"),
        (["--name", "a b"], "--name 'a b': letters, digits"),
        (["--name", "a@b@c"], "--name 'a@b@c': letters, digits"),
    ],
)
def test_bad_worker_arguments_are_one_line_and_exit_2(cli_env, args, message):
    result = run_cli("worker", *args, env=cli_env)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_broker_url_that_is_not_one_is_refused_with_its_password_masked(cli_env):
    env = {**cli_env, "DAGWATCH__CELERY__BROKER_URL": "http://user:hunter2secret@broker:80/"}
    result = run_cli("worker", env=env)
    assert result.returncode == 2
    assert "celery.broker_url = 'http://user:***@broker:80/'" in result.stderr
    assert "must be a redis://, rediss://, amqp:// or amqps:// URL" in result.stderr
    assert "hunter2secret" not in result.stderr


def test_config_list_masks_the_broker_and_result_backend_passwords(cli_env):
    env = {
        **cli_env,
        "DAGWATCH__CELERY__BROKER_URL": "amqp://dagwatch:brokerpass42@mq.internal:5672/prod",
        "DAGWATCH__CELERY__RESULT_BACKEND": "redis://:resultpass42@cache.internal:6379/1",
    }
    result = run_cli("config", "list", env=env)
    assert result.returncode == 0, result.stderr
    assert "amqp://dagwatch:***@mq.internal:5672/prod" in result.stdout
    assert "redis://:***@cache.internal:6379/1" in result.stdout
    assert "brokerpass42" not in result.stdout and "resultpass42" not in result.stdout
