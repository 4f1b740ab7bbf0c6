"""Which task instances of a run may start, and how a run ends: pure functions.

They read the serialized DAG (never user code), so the scheduler, `dags test` and the
console's "why is this not running" all give the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine import setup_teardown
from engine.states import TASK_FAILED, TASK_FINISHED, DagRunState, TaskState
from engine.trigger_rules import PAST_OK, evaluate


def _indirect_setups(dag: Any) -> Mapping[str, frozenset[str]]:
    cached = getattr(dag, "indirect_setups", None)
    return cached if cached is not None else setup_teardown.indirect_setups(dag)


def _outcome_leaves(dag: Any) -> list[str]:
    cached = getattr(dag, "outcome_leaves", None)
    return cached if cached is not None else setup_teardown.outcome_leaves(dag)


def _setup_constraint(setups: frozenset[str], current: Mapping[str, TaskState]) -> Any:
    """Airflow's check of a work task's indirect setups, before its own trigger rule:
    upstream_failed if one failed, skipped if one was skipped, wait until all succeeded.
    Returns a decision, None to wait, or True when the setups allow the rule to decide."""
    states = [current.get(setup) for setup in setups]
    if any(state in TASK_FAILED for state in states):
        return TaskState.UPSTREAM_FAILED
    if TaskState.SKIPPED in states:
        return TaskState.SKIPPED
    return all(state is TaskState.SUCCESS for state in states) or None


def decide(
    dag: Any,
    states: Mapping[str, TaskState],
    *,
    order: Sequence[Any] | None = None,
    past_states: Mapping[str, TaskState] | None = None,
) -> dict[str, TaskState]:
    """For every task still in state `none`, its next state if its trigger rule decides one.

    Tasks are visited in topological order (`order`, cached by callers that decide
    often) and decisions feed forward, so an upstream failure reaches the end of a chain
    in one call, not one call per hop. `past_states` holds each task's state in the
    previous run, for `depends_on_past` and `wait_for_downstream`; a task missing from it
    had no previous run.
    """
    current = dict(states)
    past = past_states or {}
    decisions: dict[str, TaskState] = {}
    indirect = _indirect_setups(dag)
    tasks = dag.task_dict
    for task in order if order is not None else dag.topological_sort():
        if current.get(task.task_id) is not TaskState.NONE:
            continue
        if task.task_id in indirect:
            allowed = _setup_constraint(indirect[task.task_id], current)
            if allowed is None:
                continue
            if allowed is not True:
                decisions[task.task_id] = current[task.task_id] = allowed
                continue
        ups = [up for up in task.upstream_task_ids if up in current]
        decision = evaluate(
            task.trigger_rule,
            [current[up] for up in ups],
            depends_on_past=task.depends_on_past,
            past_state=past.get(task.task_id),
            past_downstream_states=past_downstream(task, past),
            setup_states=[current[up] for up in ups if tasks[up].is_setup],
        )
        if decision is not None:
            decisions[task.task_id] = decision
            current[task.task_id] = decision
    return decisions


def past_downstream(task: Any, past_states: Mapping[str, TaskState]) -> list[TaskState]:
    """The previous run's states of a `wait_for_downstream` task's immediate downstream
    tasks (those it had: a task added since is not waited for); empty otherwise."""
    if not getattr(task, "wait_for_downstream", False):
        return []
    return [past_states[d] for d in sorted(task.downstream_task_ids) if d in past_states]


def past_task_ids(dag: Any) -> set[str]:
    """The tasks whose previous-run states `decide` needs: every `depends_on_past` task,
    and the immediate downstream of each `wait_for_downstream` task."""
    needed: set[str] = set()
    for task in dag.tasks:
        if task.depends_on_past:
            needed.add(task.task_id)
        if getattr(task, "wait_for_downstream", False):
            needed.update(task.downstream_task_ids)
    return needed


def run_outcome(dag: Any, states: Mapping[str, TaskState]) -> DagRunState | None:
    """The run's final state once every task is finished, else None (still running).

    As in Airflow, a run fails when any leaf task failed or was upstream_failed, where
    teardowns do not count as leaves (their upstream tasks do) unless they were declared
    with `on_failure_fail_dagrun=True`; the run still waits for them to finish.
    """
    if any(state not in TASK_FINISHED for state in states.values()):
        return None
    leaves = _outcome_leaves(dag)
    if any(states.get(leaf) in TASK_FAILED for leaf in leaves):
        return DagRunState.FAILED
    return DagRunState.SUCCESS


def why_waiting(
    dag: Any,
    task_id: str,
    states: Mapping[str, TaskState],
    past_states: Mapping[str, TaskState] | None = None,
) -> str | None:
    """A sentence saying why a task in state `none` cannot start yet, or None if it can.

    `past_states` (the previous run's states, None when there is none) explains a task
    held back by `depends_on_past` or `wait_for_downstream`.
    """
    task = dag.get_task(task_id)
    if states.get(task_id) is not TaskState.NONE:
        return None
    upstream = {up: states.get(up) for up in task.upstream_task_ids}
    setups = _indirect_setups(dag).get(task_id, frozenset())
    if setups and _setup_constraint(setups, states) is None:
        return f"waiting for its setup tasks to succeed: {', '.join(sorted(setups))}"
    known = {up: state for up, state in upstream.items() if state is not None}
    setup_states = [s for up, s in known.items() if dag.task_dict[up].is_setup]
    decision = evaluate(task.trigger_rule, list(known.values()), setup_states=setup_states)
    if decision is None:
        waiting = sorted(up for up, state in upstream.items() if state not in TASK_FINISHED)
        return (
            f"trigger rule {task.trigger_rule} is not met yet: waiting for upstream "
            f"{', '.join(waiting) or '(none)'}"
        )
    if decision is not TaskState.SCHEDULED:
        return None  # skipped or upstream_failed on the next decision, not waiting
    return _why_waiting_for_past(task, past_states)


def _why_waiting_for_past(task: Any, past_states: Mapping[str, TaskState] | None) -> str | None:
    past = past_states or {}
    past_state = past.get(task.task_id)
    if not task.depends_on_past or past_state is None:
        return None
    if past_state not in PAST_OK:
        return (
            f"depends_on_past: {task.task_id} is {past_state} in the previous run "
            "(it needs success or skipped)"
        )
    pending = [
        f"{down} ({past[down]})"
        for down in sorted(task.downstream_task_ids)
        if getattr(task, "wait_for_downstream", False) and down in past
        if past[down] not in PAST_OK
    ]
    if pending:
        return (
            "wait_for_downstream: in the previous run, downstream "
            f"{', '.join(pending)} has not succeeded or been skipped yet"
        )
    return None
