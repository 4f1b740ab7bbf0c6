"""Trigger rules against Airflow's documented semantics (TriggerRuleDep, flag_upstream_failed)."""

from __future__ import annotations

import pytest

from engine.sdk.trigger_rules import TriggerRule, evaluate
from engine.states import TaskState

S = TaskState.SUCCESS
F = TaskState.FAILED
UF = TaskState.UPSTREAM_FAILED
SK = TaskState.SKIPPED
N = TaskState.NONE
R = TaskState.RUNNING
RM = TaskState.REMOVED
RETRY = TaskState.UP_FOR_RETRY

RUN = TaskState.SCHEDULED
WAIT = None

TR = TriggerRule

CASES = [
    # all_success: fail fast on a failure, skip fast on a skip, else wait for all successes
    (TR.ALL_SUCCESS, [S, S], RUN),
    (TR.ALL_SUCCESS, [S, R], WAIT),
    (TR.ALL_SUCCESS, [F, R], UF),
    (TR.ALL_SUCCESS, [UF, S], UF),
    (TR.ALL_SUCCESS, [SK, R], SK),
    (TR.ALL_SUCCESS, [SK, F], UF),  # failure is checked before skip
    (TR.ALL_SUCCESS, [RETRY, S], WAIT),
    (TR.ALL_SUCCESS, [RM, S], WAIT),  # removed is done but not a success
    # all_failed: run when every upstream failed/upstream_failed; skip on any success/skip
    (TR.ALL_FAILED, [F, UF], RUN),
    (TR.ALL_FAILED, [F, R], WAIT),
    (TR.ALL_FAILED, [F, S], SK),
    (TR.ALL_FAILED, [SK, R], SK),
    # all_done: run once everything finished, whatever the outcome
    (TR.ALL_DONE, [S, F, SK, UF], RUN),
    (TR.ALL_DONE, [S, R], WAIT),
    (TR.ALL_DONE, [F, RETRY], WAIT),
    (TR.ALL_DONE, [RM, S], RUN),
    # all_skipped: run when all skipped; skip as soon as anything succeeded or failed
    (TR.ALL_SKIPPED, [SK, SK], RUN),
    (TR.ALL_SKIPPED, [SK, R], WAIT),
    (TR.ALL_SKIPPED, [SK, S], SK),
    (TR.ALL_SKIPPED, [UF, R], SK),
    # one_success: run at the first success; all done without success: upstream_failed,
    # or skipped when everything was skipped
    (TR.ONE_SUCCESS, [S, R], RUN),
    (TR.ONE_SUCCESS, [F, R], WAIT),
    (TR.ONE_SUCCESS, [F, UF], UF),
    (TR.ONE_SUCCESS, [F, SK], UF),
    (TR.ONE_SUCCESS, [SK, SK], SK),
    # one_failed: run at the first failure; skipped when all done without failure
    (TR.ONE_FAILED, [F, R], RUN),
    (TR.ONE_FAILED, [UF, R], RUN),
    (TR.ONE_FAILED, [S, R], WAIT),
    (TR.ONE_FAILED, [S, SK], SK),
    # one_done: run at the first success or failure; skipped if all done with neither
    (TR.ONE_DONE, [S, R], RUN),
    (TR.ONE_DONE, [F, R], RUN),
    (TR.ONE_DONE, [SK, R], WAIT),
    (TR.ONE_DONE, [SK, UF], SK),
    # none_failed: run when all succeeded or skipped; upstream_failed on any failure
    (TR.NONE_FAILED, [S, SK], RUN),
    (TR.NONE_FAILED, [SK, SK], RUN),
    (TR.NONE_FAILED, [S, R], WAIT),
    (TR.NONE_FAILED, [F, R], UF),
    (TR.NONE_FAILED, [UF, SK], UF),
    # none_failed_min_one_success: as none_failed, but all skipped means skipped
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, [S, SK], RUN),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, [SK, SK], SK),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, [SK, R], WAIT),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, [F, S], UF),
    # none_skipped: run when all done and none skipped (failures are fine)
    (TR.NONE_SKIPPED, [S, F, UF], RUN),
    (TR.NONE_SKIPPED, [S, R], WAIT),
    (TR.NONE_SKIPPED, [SK, R], SK),
    # always: run at once
    (TR.ALWAYS, [R, N], RUN),
    (TR.ALWAYS, [F, SK], RUN),
    # all_done_setup_success without setups upstream is all_done (setups: test_setup_teardown)
    (TR.ALL_DONE_SETUP_SUCCESS, [S, F, SK], RUN),
    (TR.ALL_DONE_SETUP_SUCCESS, [F, R], WAIT),
]


@pytest.mark.parametrize(("rule", "upstream", "expected"), CASES)
def test_rule_table(rule: TriggerRule, upstream: list[TaskState], expected: TaskState | None):
    assert evaluate(rule, upstream) == expected


def test_every_rule_is_covered_by_the_table():
    assert {case[0] for case in CASES} == set(TriggerRule)


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_no_upstream_runs_at_once(rule: TriggerRule):
    assert evaluate(rule, []) is RUN


def test_accepts_plain_strings():
    assert evaluate("one_success", ["success", "running"]) is RUN
    with pytest.raises(ValueError):
        evaluate("sometimes", [S])


@pytest.mark.parametrize(
    ("past", "expected"),
    [(None, RUN), (S, RUN), (SK, RUN), (F, WAIT), (UF, WAIT), (R, WAIT)],
)
def test_depends_on_past_holds_back_a_task_that_would_run(past, expected):
    assert evaluate(TR.ALL_SUCCESS, [S], depends_on_past=True, past_state=past) == expected


def test_depends_on_past_does_not_delay_skips_or_upstream_failed():
    assert evaluate(TR.ALL_SUCCESS, [F], depends_on_past=True, past_state=F) is UF
    assert evaluate(TR.ALL_SUCCESS, [SK], depends_on_past=True, past_state=F) is SK


def test_past_state_ignored_without_depends_on_past():
    assert evaluate(TR.ALL_SUCCESS, [S], past_state=F) is RUN
