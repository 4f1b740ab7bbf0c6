"""Which task instances of a run may start, and how a run ends: pure functions.

They read the serialized DAG (never user code), so the scheduler, `dags test` and the
console's "why is this not running" all give the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.sdk import setup_teardown
from engine.sdk.trigger_rules import PAST_OK, evaluate
from engine.states import TASK_FAILED, TASK_FINISHED, DagRunState, TaskState, combined_state


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


@dataclass(frozen=True)
class Decidable:
    """What deciding reads of a task instance, from a metastore row (whose state is text)."""

    id: int
    task_id: str
    map_index: int
    state: TaskState

    @classmethod
    def of(cls, row: Any) -> Decidable:
        return cls(row.id, row.task_id, row.map_index, TaskState(row.state))


def states_of(
    rows: Iterable[Any],
) -> tuple[dict[str, TaskState], dict[str, dict[int, TaskState]]]:
    """From task instance rows (task_id, map_index, state): one state per task, and the
    states of each expanded mapped task's instances by map index.

    A mapped task's state is the combination of its instances' (`combined_state`); before
    expansion, and once all its instances were removed, it is its placeholder row's.
    """
    plain: dict[str, TaskState] = {}
    indexed: dict[str, dict[int, TaskState]] = {}
    for row in rows:
        if row.map_index < 0:
            plain[row.task_id] = row.state
        elif row.state is not TaskState.REMOVED:
            indexed.setdefault(row.task_id, {})[row.map_index] = row.state
    for task_id, by_index in indexed.items():
        plain[task_id] = combined_state(by_index.values())
    return plain, indexed


def decide(
    dag: Any,
    states: Mapping[str, TaskState],
    *,
    order: Sequence[Any] | None = None,
    past_states: Mapping[str, TaskState] | None = None,
    instances: Mapping[str, Mapping[int, TaskState]] | None = None,
) -> dict[Any, TaskState]:
    """`decide_with_states` without the states: only the decisions."""
    return decide_with_states(
        dag, states, order=order, past_states=past_states, instances=instances
    )[0]


def decide_with_states(
    dag: Any,
    states: Mapping[str, TaskState],
    *,
    order: Sequence[Any] | None = None,
    past_states: Mapping[str, TaskState] | None = None,
    instances: Mapping[str, Mapping[int, TaskState]] | None = None,
) -> tuple[dict[Any, TaskState], dict[str, TaskState]]:
    """For every task instance still in state `none`, its next state if its trigger rule
    decides one: keyed by task id, or by (task id, map index) for an expanded mapped task.

    Tasks are visited in topological order (`order`, cached by callers that decide
    often) and decisions feed forward, so an upstream failure reaches the end of a chain
    in one call, not one call per hop. `past_states` holds each task's state in the
    previous run, for `depends_on_past` and `wait_for_downstream`; a task missing from it
    had no previous run. `instances` holds the states of expanded mapped tasks by map
    index (see `states_of`): each instance counts as one upstream state, and within a
    mapped task group an instance waits only for the same map index upstream in it.

    Also returns each task's state once the decisions apply (a mapped task's combined),
    which is what the run's outcome is judged on.
    """
    current = dict(states)
    mapped = {task_id: dict(by_index) for task_id, by_index in (instances or {}).items()}
    past = past_states or {}
    decisions: dict[Any, TaskState] = {}
    indirect = _indirect_setups(dag)
    tasks = dag.task_dict
    for task in order if order is not None else dag.topological_sort():
        task_id = task.task_id
        by_index = mapped.get(task_id)
        if by_index is not None:
            waiting = sorted(i for i, state in by_index.items() if state is TaskState.NONE)
            for index in waiting:
                decision = _decide_one(task, index, current, mapped, past, indirect, tasks)
                if decision is not None:
                    decisions[(task_id, index)] = by_index[index] = decision
            if waiting:
                current[task_id] = combined_state(by_index.values())
            continue
        if current.get(task_id) is not TaskState.NONE:
            continue
        decision = _decide_one(task, -1, current, mapped, past, indirect, tasks)
        if decision is TaskState.SCHEDULED and getattr(task, "is_mapped", False):
            decision = _not_expanded(task, current)
        if decision is not None:
            decisions[task_id] = current[task_id] = decision
    return decisions, current


def _decide_one(
    task: Any,
    index: int,
    current: Mapping[str, TaskState],
    mapped: Mapping[str, Mapping[int, TaskState]],
    past: Mapping[str, TaskState],
    indirect: Mapping[str, frozenset[str]],
    tasks: Mapping[str, Any],
) -> TaskState | None:
    if task.task_id in indirect:
        allowed = _setup_constraint(indirect[task.task_id], current)
        if allowed is None or allowed is not True:
            return allowed
    ups = [up for up in task.upstream_task_ids if up in current]
    return evaluate(
        task.trigger_rule,
        _upstream_states(task, index, ups, current, mapped, tasks) if mapped else
        [current[up] for up in ups],
        depends_on_past=task.depends_on_past,
        past_state=past.get(task.task_id),
        past_downstream_states=past_downstream(task, past),
        setup_states=[current[up] for up in ups if tasks[up].is_setup],
    )  # fmt: skip


def _upstream_states(
    task: Any,
    index: int,
    ups: list[str],
    current: Mapping[str, TaskState],
    mapped: Mapping[str, Mapping[int, TaskState]],
    tasks: Mapping[str, Any],
) -> list[TaskState]:
    """Each upstream instance's state: one per map index of a mapped upstream task, or only
    the same index's when both tasks are mapped in the same task group."""
    group = getattr(task, "mapped_group", None) if index >= 0 else None
    states: list[TaskState] = []
    for up in ups:
        by_index = mapped.get(up)
        if by_index is None:
            states.append(current[up])
        elif group is not None and tasks[up].mapped_group == group and index in by_index:
            states.append(by_index[index])
        else:
            states.extend(by_index.values())
    return states


def _not_expanded(task: Any, current: Mapping[str, TaskState]) -> TaskState | None:
    """A mapped task whose rule lets it run but which is not expanded yet: it waits for
    its inputs, or, when an input task ended without success, cannot expand at all."""
    states = [current.get(source) for source in task.mapping_inputs]
    if states and all(s in TASK_FINISHED for s in states):
        if any(s is not TaskState.SUCCESS for s in states):
            return TaskState.UPSTREAM_FAILED
    return None


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
