"""Which task instances of a run may start, and how a run ends: pure functions.

They read the serialized DAG (never user code), so the scheduler, `dags test` and the
console's "why is this not running" all give the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.states import TASK_FAILED, TASK_FINISHED, DagRunState, TaskState
from engine.trigger_rules import evaluate


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
    for task in order if order is not None else dag.topological_sort():
        if current.get(task.task_id) is not TaskState.NONE:
            continue
        upstream = [current[up] for up in task.upstream_task_ids if up in current]
        decision = evaluate(
            task.trigger_rule,
            upstream,
            depends_on_past=task.depends_on_past,
            past_state=past.get(task.task_id),
            past_downstream_states=past_downstream(task, past),
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

    As in Airflow, a run fails when any leaf task failed or was upstream_failed.
    """
    if any(state not in TASK_FINISHED for state in states.values()):
        return None
    leaves = [task.task_id for task in dag.leaves]
    if any(states.get(leaf) in TASK_FAILED for leaf in leaves):
        return DagRunState.FAILED
    return DagRunState.SUCCESS


def why_waiting(dag: Any, task_id: str, states: Mapping[str, TaskState]) -> str | None:
    """A sentence saying why a task in state `none` cannot start yet, or None if it can."""
    task = dag.get_task(task_id)
    if states.get(task_id) is not TaskState.NONE:
        return None
    upstream = {up: states.get(up) for up in task.upstream_task_ids}
    if evaluate(task.trigger_rule, [s for s in upstream.values() if s is not None]) is not None:
        return None
    waiting = sorted(up for up, state in upstream.items() if state not in TASK_FINISHED)
    return (
        f"trigger rule {task.trigger_rule} is not met yet: waiting for upstream "
        f"{', '.join(waiting) or '(none)'}"
    )
