"""What a process learns to mask by itself, and the masking at each exit: nested values,
log handlers (the handler of last resort too), an attempt's error, a parse child's
traceback, custom metrics' names and labels."""

from __future__ import annotations

import json
import logging
import textwrap

import pytest

from engine import masking
from engine.config import load_config
from engine.execution.runner import Executed
from engine.masking import (
    learn_config_secrets,
    learn_environment_secrets,
    learn_secrets,
    mask_secret,
    redact,
    redact_value,
)
from engine.parsing.dag_folder import file_hash
from engine.parsing.parser import parse_files
from engine.states import TaskState
from metrics import Stats
from metrics.testing import MemoryBackend

FERNET_A = "8Ffs3uXKvmtDOpWr5i0DQSHO3iZMrZWC8nXPzpPpIzw="
FERNET_B = "t0oZ9iY2dM0f6UHWcGQ1A0oN0YrjsyqHkNCGHRsgYjY="


def test_nested_values_are_masked_keys_included_ciphertext_kept():
    mask_secret("s3cr3t-value")
    value = {
        "a": "x s3cr3t-value y",
        "list": ["s3cr3t-value", 1, None, ("s3cr3t-value!",)],
        "s3cr3t-value": True,
        "sealed_urls": "token-with-s3cr3t-value",
    }

    assert redact_value(value) == {
        "a": "x *** y",
        "list": ["***", 1, None, ("***!",)],
        "***": True,
        "sealed_urls": "token-with-s3cr3t-value",
    }
    assert redact_value(42) == 42


@pytest.mark.parametrize(
    ("env", "hidden", "shown"),
    [
        ({"DAGWATCH__CORE__FERNET_KEY": f"{FERNET_A},{FERNET_B}"}, [FERNET_A, FERNET_B], []),
        (
            {"DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg://u:db-pa%24s@h/d"},
            ["db-pa$s", "db-pa%24s"],
            ["postgresql+psycopg://u:***@h/d"],
        ),
        (
            {"DAGWATCH__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////srv/dagwatch/dagwatch.db"},
            [],
            ["sqlite:////srv/dagwatch/dagwatch.db"],
        ),
        (
            {"DAGWATCH__ALERTS__FALLBACK_URLS": "json://u:fb-pa55@h/x, mailto://m:fb2-pa55@h"},
            ["fb-pa55", "fb2-pa55"],
            ["json://u:***@h/x"],
        ),
        ({"DAGWATCH__METRICS__STATSD_HOST": "statsd.internal"}, [], ["statsd.internal"]),
    ],
)
def test_secret_options_are_learnt_from_the_configuration(home, env, hidden, shown):
    learn_config_secrets(load_config({"DAGWATCH_HOME": str(home), **env}))

    text = " ".join(hidden + shown)
    assert all(secret not in redact(text) for secret in hidden)
    assert all(value in redact(text) for value in shown)


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("DAGWATCH_CONN_DB", "postgres://u:env-pa55@db:5432/x", "env-pa55"),
        ("DAGWATCH_CONN_DB", "postgres://u:env%2Fpa55@db/x", "env/pa55"),
        ("DAGWATCH_CONN_API", json.dumps({"conn_type": "http", "password": "js-pa55"}), "js-pa55"),
        ("DAGWATCH_CONN_X", json.dumps({"conn_type": "x", "extra": {"api_token": "xt0k"}}), "xt0k"),
        ("DAGWATCH_CONN_BAD", "http://u:bad-pa55@h:notaport/", "bad-pa55"),
        ("DAGWATCH_VAR_SERVICE_TOKEN", "env-t0ken", "env-t0ken"),
    ],
)  # fmt: skip
def test_environment_secrets_are_learnt_without_being_read(name, value, secret):
    learn_environment_secrets({name: value})

    assert redact(f"<{secret}>") == "<***>"


def test_plain_environment_values_are_not_masked():
    learn_environment_secrets({"DAGWATCH_VAR_REGION": "eu-west-1", "HOME": "/home/ops"})

    assert redact("eu-west-1 /home/ops") == "eu-west-1 /home/ops"


def test_log_handlers_and_the_last_resort_redact_once_configured(home, capsys):
    learn_secrets(load_config({"DAGWATCH_HOME": str(home)}), {"DAGWATCH_VAR_API_KEY": "lr-s3cret"})
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "leak %s", ("lr-s3cret",), None)

    assert logging.lastResort is not None
    logging.lastResort.handle(record)
    assert capsys.readouterr().err == "leak ***\n"


@pytest.mark.parametrize(
    ("error", "stored"),
    [
        ("RuntimeError: ex-s3cret", "RuntimeError: ***"),
        ("ex-s3cret ex-s3cret", "*** ***"),
        (None, None),
        ("no secret here", "no secret here"),
    ],
)
def test_an_attempt_outcome_is_masked_where_it_is_built(error, stored):
    mask_secret("ex-s3cret")

    assert Executed(TaskState.FAILED, error).error == stored


def test_a_parse_child_masks_the_traceback_it_sends_back(tmp_path):
    path = tmp_path / "leaky_dag.py"
    path.write_text(
        textwrap.dedent(
            """
            from engine import DAG, mask_secret
            mask_secret("child-only-s3cret")
            raise RuntimeError("cannot parse: child-only-s3cret")
            """
        )
    )

    (result,) = parse_files([(path, file_hash(path))], timeout=60, processes=1)

    assert masking.get_masker().active is False  # this process never learnt it
    assert "RuntimeError: cannot parse: ***" in result.error
    assert "child-only-s3cret" not in result.error


@pytest.mark.parametrize(
    ("name", "tags", "labels"),
    [
        ("custom.calls", {"token": "m-s3cret-9"}, {"token": "___"}),
        ("custom.calls", {"who": "user m-s3cret-9"}, {"who": "user____"}),
        ("custom.calls", {"m-s3cret-9": "x"}, {"tag_": "x"}),
        ("custom.calls_m-s3cret-9", {}, {}),
    ],
)
def test_custom_metric_names_and_labels_are_masked(name, tags, labels):
    mask_secret("m-s3cret-9")
    backend = MemoryBackend()
    stats = Stats([backend], strict=True, redact=masking.redact)

    stats.incr(name, tags=tags)

    (sample,) = backend.emissions
    assert "s3cret" not in json.dumps([sample.name, sample.labels])
    assert sample.name == "custom.calls"
    assert sample.labels == labels


def test_engine_metrics_keep_their_labels():
    mask_secret("default")
    backend = MemoryBackend()
    Stats([backend], strict=True, redact=masking.redact).incr(
        "ti.start", tags={"dag_id": "d", "task_id": "t"}
    )

    assert backend.emissions[0].labels == {"dag_id": "d", "task_id": "t"}
