"""Setup and teardown tasks: what the graph says about them (Airflow 2.7+ semantics).

Pure functions over any DAG-like object (`task_dict` of tasks with `upstream_task_ids`,
`downstream_task_ids`, `is_setup`, `is_teardown`, `on_failure_fail_dagrun`), so the
scheduler, `dags test` and clearing read the serialized DAG the same way. The
`with teardown.as_teardown(setups=...)` form, which needs the authoring objects, is
`SetupTeardownScope` below.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any


def _flat(dag: Any, task_id: str, upstream: bool) -> set[str]:
    """Every task reachable from `task_id` upstream (or downstream), without it."""
    tasks = dag.task_dict
    found: set[str] = set()
    todo = [task_id]
    while todo:
        task = tasks.get(todo.pop())
        if task is None:
            continue
        for relative in task.upstream_task_ids if upstream else task.downstream_task_ids:
            if relative not in found:
                found.add(relative)
                todo.append(relative)
    found.discard(task_id)
    return found


def _teardowns_of(dag: Any, setup_id: str) -> set[str]:
    tasks = dag.task_dict
    return {down for down in tasks[setup_id].downstream_task_ids if tasks[down].is_teardown}


def relevant_setups(dag: Any, task_id: str) -> set[str]:
    """The upstream setups `task_id` works inside (Airflow's get_upstreams_only_setups).

    A setup is relevant when it has no teardown, or when one of its teardowns is
    downstream of the task: the task runs between the resource's creation and removal.
    """
    tasks = dag.task_dict
    downstream_teardowns = {t for t in _flat(dag, task_id, False) if tasks[t].is_teardown}
    return {
        up
        for up in _flat(dag, task_id, True)
        if tasks[up].is_setup
        and (not _teardowns_of(dag, up) or _teardowns_of(dag, up) & downstream_teardowns)
    }


def indirect_setups(dag: Any) -> dict[str, frozenset[str]]:
    """For each work task, the relevant setups that are not its direct upstream.

    Airflow makes such a task wait until all of them succeeded, and marks it
    upstream_failed (skipped) as soon as one failed (was skipped), whatever its own
    trigger rule: work never runs without its resources. Teardowns are exempt.
    """
    tasks = dag.task_dict
    if not any(task.is_setup for task in tasks.values()):
        return {}
    found = {}
    for task_id, task in tasks.items():
        if task.is_teardown:
            continue
        setups = relevant_setups(dag, task_id) - set(task.upstream_task_ids)
        if setups:
            found[task_id] = frozenset(setups)
    return found


def outcome_leaves(dag: Any) -> list[str]:
    """The tasks whose states decide a run's outcome (Airflow's _tis_for_dagrun_state).

    Teardowns do not count, unless `on_failure_fail_dagrun`; a task whose only downstream
    tasks are such ignored teardowns counts as a leaf. A DAG of nothing but ignored
    teardowns falls back to its real leaves.
    """
    tasks = dag.task_dict

    def ignored(task: Any) -> bool:
        return bool(task.is_teardown and not task.on_failure_fail_dagrun)

    leaves = [
        task_id
        for task_id, task in tasks.items()
        if not ignored(task) and all(ignored(tasks[down]) for down in task.downstream_task_ids)
    ]
    return leaves or [task_id for task_id, task in tasks.items() if not task.downstream_task_ids]


def with_setups_and_teardowns(dag: Any, task_ids: Collection[str]) -> set[str]:
    """`task_ids` plus what clearing them must also clear, as Airflow does: each task's
    relevant upstream setups and their teardowns, and each setup's own teardowns (a
    resource created again must be removed again)."""
    selected = set(task_ids)
    if not any(task.is_setup for task in dag.task_dict.values()):
        return selected
    for task_id in task_ids:
        setups = relevant_setups(dag, task_id)
        if dag.task_dict[task_id].is_setup:
            setups.add(task_id)
        for setup in setups:
            selected.add(setup)
            selected |= _teardowns_of(dag, setup)
    return selected


class SetupTeardownScope:
    """`with teardown.as_teardown(setups=setup): work...`: the tasks created inside the
    block are wired setup >> (their roots) and (their leaves) >> teardown on exit."""

    def __init__(self, setups: Iterable[Any], teardowns: Iterable[Any]) -> None:
        self.setups = list(setups)
        self.teardowns = list(teardowns)
        self.dag = next((t.dag for t in [*self.setups, *self.teardowns] if t.dag), None)
        self._before: set[str] = set()

    def __enter__(self) -> SetupTeardownScope:
        if self.dag is None:
            raise RuntimeError("a setup/teardown context needs tasks that belong to a DAG")
        self._before = set(self.dag.task_dict)
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None or self.dag is None:  # __enter__ refused a scope without a DAG
            return
        new = [
            task
            for task_id, task in self.dag.task_dict.items()
            if task_id not in self._before and not (task.is_setup or task.is_teardown)
        ]
        ids = {task.task_id for task in new}
        for task in new:
            if not set(task.upstream_task_ids) & ids:
                for setup in self.setups:
                    setup.set_downstream(task)
            if not set(task.downstream_task_ids) & ids:
                for teardown in self.teardowns:
                    teardown.set_upstream(task)
