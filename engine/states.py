"""States of task instances and DAG runs, and the transitions allowed between them.

This module is the single statement of the state machines: the metastore's write path
(`engine.store.transitions`) refuses any transition that is not listed here.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class TaskState(StrEnum):
    """State of one task instance (one task in one DAG run)."""

    NONE = "none"  #: created, dependencies not yet evaluated
    SCHEDULED = "scheduled"  #: dependencies met, waiting for a slot
    QUEUED = "queued"  #: handed to an executor, not yet started
    RUNNING = "running"  #: an attempt is executing
    SUCCESS = "success"  #: finished without error
    FAILED = "failed"  #: finished with an error and no retries left
    UP_FOR_RETRY = "up_for_retry"  #: failed, will be retried after its retry delay
    UP_FOR_RESCHEDULE = "up_for_reschedule"  #: a sensor waiting between pokes
    UPSTREAM_FAILED = "upstream_failed"  #: cannot run because an upstream failed
    SKIPPED = "skipped"  #: skipped by branching, short-circuit or SkipTask
    REMOVED = "removed"  #: the task no longer exists in the DAG


class DagRunState(StrEnum):
    """State of one DAG run."""

    QUEUED = "queued"  #: created, waiting for max_active_runs to admit it
    RUNNING = "running"  #: its task instances are being scheduled
    SUCCESS = "success"  #: every leaf task ended in a success state
    FAILED = "failed"  #: a leaf task failed, or the run timed out


#: Task states from which nothing more happens without a user's action (clear).
TASK_FINISHED: frozenset[TaskState] = frozenset(
    {
        TaskState.SUCCESS,
        TaskState.FAILED,
        TaskState.UPSTREAM_FAILED,
        TaskState.SKIPPED,
        TaskState.REMOVED,
    }
)
#: Task states that still need the scheduler.
TASK_UNFINISHED: frozenset[TaskState] = frozenset(TaskState) - TASK_FINISHED
#: Task states that count as failure for trigger rules and run outcome.
TASK_FAILED: frozenset[TaskState] = frozenset({TaskState.FAILED, TaskState.UPSTREAM_FAILED})
#: Task states that occupy an executor (and pool) slot; up_for_retry and
#: up_for_reschedule (a sensor between pokes in reschedule mode) hold none.
TASK_OCCUPYING: frozenset[TaskState] = frozenset({TaskState.QUEUED, TaskState.RUNNING})

DAG_RUN_FINISHED: frozenset[DagRunState] = frozenset({DagRunState.SUCCESS, DagRunState.FAILED})
DAG_RUN_ACTIVE: frozenset[DagRunState] = frozenset({DagRunState.QUEUED, DagRunState.RUNNING})

_T = TaskState
#: to_state -> states it may be reached from.
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    # Clearing resets a task from any state that is not currently executing.
    _T.NONE: frozenset(TASK_FINISHED | {_T.SCHEDULED, _T.UP_FOR_RETRY, _T.UP_FOR_RESCHEDULE}),
    _T.SCHEDULED: frozenset({_T.NONE, _T.UP_FOR_RETRY, _T.UP_FOR_RESCHEDULE, _T.QUEUED}),
    _T.QUEUED: frozenset({_T.SCHEDULED}),
    _T.RUNNING: frozenset({_T.QUEUED}),
    # besides finishing, an operator may mark any task that is not executing a success
    # (marking a run success, engine.api.mark_run)
    _T.SUCCESS: frozenset(
        {
            _T.RUNNING,
            _T.NONE,
            _T.SCHEDULED,
            _T.UP_FOR_RETRY,
            _T.UP_FOR_RESCHEDULE,
            _T.FAILED,
            _T.UPSTREAM_FAILED,
        }
    ),
    # queued -> failed: the executor lost the attempt before it started; none -> failed: a
    # mapped task whose input cannot be expanded (not a list, longer than the cap).
    _T.FAILED: frozenset({_T.RUNNING, _T.QUEUED, _T.UP_FOR_RETRY, _T.NONE}),
    _T.UP_FOR_RETRY: frozenset({_T.RUNNING, _T.QUEUED}),
    _T.UP_FOR_RESCHEDULE: frozenset({_T.RUNNING}),
    _T.UPSTREAM_FAILED: frozenset({_T.NONE, _T.SCHEDULED}),
    # A running task may skip itself (SkipTask, soft_fail sensor); a run's timeout skips
    # what still waits, retries and sensors between pokes included.
    _T.SKIPPED: frozenset(
        {_T.NONE, _T.SCHEDULED, _T.RUNNING, _T.UP_FOR_RETRY, _T.UP_FOR_RESCHEDULE}
    ),
    _T.REMOVED: frozenset(TASK_UNFINISHED - TASK_OCCUPYING),
}

_R = DagRunState
DAG_RUN_TRANSITIONS: dict[DagRunState, frozenset[DagRunState]] = {
    _R.QUEUED: frozenset({_R.SUCCESS, _R.FAILED}),  # cleared for a re-run
    _R.RUNNING: frozenset({_R.QUEUED, _R.SUCCESS, _R.FAILED}),
    # an operator may mark a run success or failed whatever it is (engine.api.mark_run)
    _R.SUCCESS: frozenset({_R.RUNNING, _R.QUEUED, _R.FAILED}),
    _R.FAILED: frozenset({_R.RUNNING, _R.QUEUED, _R.SUCCESS}),
}


#: The order in which a mapped task's instances speak for it while some are unfinished:
#: the furthest along first, so "running" shows while any instance runs.
_UNFINISHED_ORDER = (
    TaskState.RUNNING,
    TaskState.QUEUED,
    TaskState.SCHEDULED,
    TaskState.UP_FOR_RETRY,
    TaskState.UP_FOR_RESCHEDULE,
    TaskState.NONE,
)


def combined_state(states: Iterable[TaskState]) -> TaskState:
    """One state for the instances of a mapped task, as its downstream and its run see it:
    unfinished while any instance is, failed if any failed, skipped if all were skipped,
    otherwise success. Removed instances (a shorter re-expansion) do not count."""
    present = {TaskState(state) for state in states} - {TaskState.REMOVED}
    if not present:
        return TaskState.REMOVED
    for state in _UNFINISHED_ORDER:
        if state in present:
            return state
    for state in (TaskState.FAILED, TaskState.UPSTREAM_FAILED):
        if state in present:
            return state
    return TaskState.SKIPPED if present == {TaskState.SKIPPED} else TaskState.SUCCESS


def task_transition_allowed(from_state: TaskState, to_state: TaskState) -> bool:
    """Whether a task instance may move from `from_state` to `to_state`."""
    return from_state in TASK_TRANSITIONS[to_state]


def dag_run_transition_allowed(from_state: DagRunState, to_state: DagRunState) -> bool:
    """Whether a DAG run may move from `from_state` to `to_state`."""
    return from_state in DAG_RUN_TRANSITIONS[to_state]
