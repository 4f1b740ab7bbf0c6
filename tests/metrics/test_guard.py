"""The guard: sanitised, bounded label values; capped label sets; allow and block lists."""

from __future__ import annotations

import logging

import pytest

from metrics.guard import (
    MAX_STATSD_NAME_LENGTH,
    MAX_VALUE_LENGTH,
    OVERFLOW,
    Guard,
    legacy_name,
    sanitize_key,
    sanitize_value,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("etl_daily", "etl_daily"),
        ("etl daily/2024:eu", "etl_daily_2024_eu"),
        ("a.b-c_D9", "a.b-c_D9"),
        ("données|#,=", "donn_es____"),
        ("", "none"),
        (None, "none"),
        (42, "42"),
    ],
)
def test_label_values_keep_only_safe_characters(raw: object, clean: str) -> None:
    assert sanitize_value(raw) == clean


def test_long_values_are_cut_with_a_hash_so_they_stay_distinct() -> None:
    first, second = "x" * 300 + "first", "x" * 300 + "second"
    assert len(sanitize_value(first)) == MAX_VALUE_LENGTH
    assert sanitize_value(first) != sanitize_value(second)
    assert sanitize_value(first) == sanitize_value(first)  # stable across calls


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("Team", "team"), ("my-tag", "my_tag"), ("1st", "tag_1st"), ("le", "tag_le"), ("__x", "x")],
)
def test_custom_tag_keys_become_valid_label_names(raw: str, clean: str) -> None:
    assert sanitize_key(raw) == clean


def test_legacy_names_are_capped_and_dots_in_values_do_not_add_segments() -> None:
    labels = {"dag_id": "a.b", "task_id": "t", "state": "success"}
    assert legacy_name("ti.finish.{dag_id}.{task_id}.{state}", labels, 250) == (
        "ti.finish.a_b.t.success"
    )
    long_labels = {"dag_id": "d" * 100, "task_id": "t" * 100, "state": "s" * 100}
    name = legacy_name("ti.finish.{dag_id}.{task_id}.{state}", long_labels, MAX_STATSD_NAME_LENGTH)
    assert len(name) <= MAX_STATSD_NAME_LENGTH
    assert name.startswith("ti.finish.ddd") and name.count(".") == 4


def test_cardinality_cap_folds_new_label_sets_into_overflow_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = Guard(max_series=2)
    assert guard.admit("ti.start", {"dag_id": "a", "task_id": "t"}) == {
        "dag_id": "a",
        "task_id": "t",
    }
    guard.admit("ti.start", {"dag_id": "b", "task_id": "t"})
    with caplog.at_level(logging.WARNING, logger="metrics.guard"):
        for dag in ("c", "d", "e"):
            assert guard.admit("ti.start", {"dag_id": dag, "task_id": "t"}) == {
                "dag_id": OVERFLOW,
                "task_id": OVERFLOW,
            }
    assert guard.admit("ti.start", {"dag_id": "a", "task_id": "t"})["dag_id"] == "a"  # known
    assert guard.admit("ti.finish", {"dag_id": "c"}) == {"dag_id": "c"}  # per metric
    overflow_logs = [r for r in caplog.records if "folded into" in r.getMessage()]
    assert len(overflow_logs) == 1 and "ti.start" in overflow_logs[0].getMessage()


def test_allow_and_block_lists_match_prefixes_like_airflow() -> None:
    guard = Guard(allow=["scheduler", "pool."], block=["scheduler.tasks"])
    assert guard.allowed("scheduler_heartbeat")
    assert guard.allowed("pool.open_slots")
    assert not guard.allowed("scheduler.tasks.starving")
    assert not guard.allowed("ti.finish")
    assert Guard().allowed("anything")
    assert not Guard(block=["ti."]).allowed("ti.finish")
