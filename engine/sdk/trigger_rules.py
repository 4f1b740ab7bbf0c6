"""Trigger rules: when a task may run, given the states of its direct upstream tasks.

`evaluate` is a pure function so the scheduler, `dags test` and the console agree. It
follows Airflow's TriggerRuleDep (with `flag_upstream_failed`) exactly: some rules
decide skipped/upstream_failed before every upstream is done (e.g. `all_success` turns
upstream_failed as soon as one upstream failed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from enum import StrEnum

from engine.states import TASK_FINISHED, TaskState


class TriggerRule(StrEnum):
    """The condition on upstream states under which a task runs (Airflow's names)."""

    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ALL_SKIPPED = "all_skipped"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ONE_DONE = "one_done"
    NONE_FAILED = "none_failed"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    NONE_SKIPPED = "none_skipped"
    ALWAYS = "always"
    #: A teardown's rule: all upstream done and, if it has setups upstream, one succeeded.
    ALL_DONE_SETUP_SUCCESS = "all_done_setup_success"


RUN = TaskState.SCHEDULED
SKIP = TaskState.SKIPPED
UPSTREAM_FAILED = TaskState.UPSTREAM_FAILED
#: Past states that let a depends_on_past task run (Airflow's PrevDagrunDep).
PAST_OK: frozenset[TaskState] = frozenset({TaskState.SUCCESS, TaskState.SKIPPED})


def _setup_rule(n: int, c: Counter[TaskState], setups: Counter[TaskState]) -> TaskState | None:
    """ALL_DONE_SETUP_SUCCESS (Airflow's teardown rule): wait for every upstream, then run
    if there is no upstream setup or one of them succeeded; skip if all of them were
    skipped, else upstream_failed (the resource was never created, nothing to tear down)."""
    done = sum(count for state, count in c.items() if state in TASK_FINISHED)
    if done < n:
        return None
    n_setups = setups.total()
    if n_setups and setups[TaskState.SKIPPED] >= n_setups:
        return SKIP
    if n_setups and not setups[TaskState.SUCCESS]:
        return UPSTREAM_FAILED
    return RUN


def _terminal(rule: TriggerRule, n: int, c: Counter[TaskState]) -> TaskState | None:
    """The skipped/upstream_failed decision Airflow takes before the rule is met, if any."""
    success, skipped = c[TaskState.SUCCESS], c[TaskState.SKIPPED]
    failed, upstream_failed = c[TaskState.FAILED], c[TaskState.UPSTREAM_FAILED]
    done = sum(count for state, count in c.items() if state in TASK_FINISHED)
    all_done = done >= n
    any_failed = bool(failed or upstream_failed)
    # rule -> (condition, decision) pairs, checked in order (Airflow's order)
    table: dict[TriggerRule, list[tuple[bool, TaskState]]] = {
        TriggerRule.ALL_SUCCESS: [(any_failed, UPSTREAM_FAILED), (bool(skipped), SKIP)],
        TriggerRule.NONE_FAILED: [(any_failed, UPSTREAM_FAILED)],
        TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS: [
            (any_failed, UPSTREAM_FAILED),
            (skipped == n, SKIP),
        ],
        TriggerRule.ALL_FAILED: [(bool(success or skipped), SKIP)],
        TriggerRule.ONE_SUCCESS: [
            (all_done and done == skipped, SKIP),
            (all_done and not success, UPSTREAM_FAILED),
        ],
        TriggerRule.ONE_FAILED: [(all_done and not any_failed, SKIP)],
        TriggerRule.ONE_DONE: [(all_done and not (failed or success), SKIP)],
        TriggerRule.NONE_SKIPPED: [(bool(skipped), SKIP)],
        TriggerRule.ALL_SKIPPED: [(bool(success) or any_failed, SKIP)],
    }
    for condition, decision in table.get(rule, []):
        if condition:
            return decision
    return None


def _met(rule: TriggerRule, n: int, c: Counter[TaskState]) -> bool:
    """Whether the rule lets the task run now."""
    success, skipped = c[TaskState.SUCCESS], c[TaskState.SKIPPED]
    failed, upstream_failed = c[TaskState.FAILED], c[TaskState.UPSTREAM_FAILED]
    done = sum(count for state, count in c.items() if state in TASK_FINISHED)
    checks = {
        TriggerRule.ALL_SUCCESS: success >= n,
        TriggerRule.ALL_FAILED: failed + upstream_failed >= n,
        TriggerRule.ALL_DONE: done >= n,
        TriggerRule.ALL_SKIPPED: skipped >= n,
        TriggerRule.ONE_SUCCESS: success > 0,
        TriggerRule.ONE_FAILED: failed + upstream_failed > 0,
        TriggerRule.ONE_DONE: success + failed > 0,
        TriggerRule.NONE_FAILED: success + skipped >= n,
        TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS: success + skipped >= n,
        TriggerRule.NONE_SKIPPED: done >= n and not skipped,
        TriggerRule.ALWAYS: True,
    }
    return checks[rule]


def evaluate(
    rule: TriggerRule | str,
    upstream_states: Collection[TaskState | str],
    *,
    depends_on_past: bool = False,
    past_state: TaskState | str | None = None,
    past_downstream_states: Collection[TaskState | str] = (),
    setup_states: Collection[TaskState | str] = (),
) -> TaskState | None:
    """Decide a waiting task's next state from its direct upstream tasks' states.

    Returns `TaskState.SCHEDULED` (may run now), `TaskState.SKIPPED`,
    `TaskState.UPSTREAM_FAILED`, or None (not decidable yet: wait).

    A task without upstream tasks runs at once whatever its rule, as in Airflow. A
    `removed` upstream counts as done but as neither success, skip nor failure.

    With `depends_on_past`, a task that would run waits unless `past_state` (its state in
    the previous run; None when there is no previous run) is success or skipped.
    Skip/upstream_failed decisions do not wait for the past, as in Airflow.
    `past_downstream_states` (with `wait_for_downstream`: the previous run's states of the
    task's immediate downstream tasks) must all be success or skipped too.

    `setup_states` are the states of the upstream tasks that are setups (a subset of
    `upstream_states`); only `all_done_setup_success` reads them.
    """
    rule = TriggerRule(rule)
    counts = Counter(TaskState(state) for state in upstream_states)
    n = len(upstream_states)
    if n == 0 or rule is TriggerRule.ALWAYS:
        decision: TaskState | None = RUN
    elif rule is TriggerRule.ALL_DONE_SETUP_SUCCESS:
        decision = _setup_rule(n, counts, Counter(TaskState(s) for s in setup_states))
    else:
        decision = _terminal(rule, n, counts)
        if decision is None and _met(rule, n, counts):
            decision = RUN
    if decision is RUN and depends_on_past and past_state is not None:
        if TaskState(past_state) not in PAST_OK:
            return None
        if any(TaskState(state) not in PAST_OK for state in past_downstream_states):
            return None
    return decision
