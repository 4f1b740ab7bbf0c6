"""Marking a run success or failed: its unfinished task instances are settled first.

Marking success makes every task instance that is not executing (nor already a success or
skipped) a success; marking failed fails the executing ones and skips those that have not
run. Queued and running task instances are left to finish when a run is marked success
(their attempt is executing; it will record its own outcome), and failed when it is
marked failed, as in Airflow. One transaction, with its audit row.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from engine.api.clearing import TaskRef, utc_now
from engine.exceptions import DagwatchError, TransitionConflict
from engine.states import DagRunState, TaskState
from engine.store import runs
from engine.store.audit import record_audit
from engine.store.db import Store
from engine.store.transitions import transition_dag_run, transition_task_instances
from engine.store.wakeup import notify_scheduler

_T = TaskState
#: target run state -> {task state: the state marking moves it to}
_PLAN: dict[DagRunState, dict[TaskState, TaskState]] = {
    DagRunState.SUCCESS: {
        state: _T.SUCCESS
        for state in (
            _T.NONE,
            _T.SCHEDULED,
            _T.UP_FOR_RETRY,
            _T.UP_FOR_RESCHEDULE,
            _T.FAILED,
            _T.UPSTREAM_FAILED,
        )
    },
    DagRunState.FAILED: {
        _T.QUEUED: _T.FAILED,
        _T.RUNNING: _T.FAILED,
        _T.NONE: _T.SKIPPED,
        _T.SCHEDULED: _T.SKIPPED,
        _T.UP_FOR_RETRY: _T.SKIPPED,
        _T.UP_FOR_RESCHEDULE: _T.SKIPPED,
    },
}


@dataclass
class MarkResult:
    """What marking a run changed (or, with dry_run, would change)."""

    run_state: str
    changed: list[tuple[TaskRef, str]] = field(default_factory=list)  # (before, new state)
    left_running: list[TaskRef] = field(default_factory=list)
    dry_run: bool = False


def mark_run(
    store: Store,
    dag_id: str,
    run_id: str,
    state: DagRunState | str,
    *,
    actor: str = "cli",
    now: datetime | None = None,
    dry_run: bool = False,
) -> MarkResult:
    """Mark one run success or failed (see the module doc); `dry_run` only reports."""
    target = DagRunState(state)
    if target not in _PLAN:
        raise DagwatchError(f"a run can be marked success or failed, not {target.value}")
    now = utc_now(now)
    moves = _PLAN[target]
    with store.session(readonly=dry_run) as session:
        run = runs.get_dag_run(session, dag_id, run_id)
        result = MarkResult(run.state, dry_run=dry_run)
        tis = runs.get_task_instances(session, dag_id, run_id)
        todo: dict[tuple[str, str], list[int]] = defaultdict(list)
        for ti in tis:
            ref = TaskRef(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.state, ti.try_number)
            to = moves.get(TaskState(ti.state))
            if to is not None:
                todo[(ti.state, to.value)].append(ti.id)
                result.changed.append((ref, to.value))
            elif ti.state in (_T.QUEUED, _T.RUNNING):
                result.left_running.append(ref)
        if dry_run or run.state == target.value:
            return result
        reason = f"marked {target.value} by {actor}"
        for (before, after), ids in todo.items():
            transition_task_instances(
                session, ids, expected=TaskState(before), to=TaskState(after), at=now, reason=reason
            )
        try:
            transition_dag_run(
                session,
                run.id,
                expected=DagRunState(run.state),
                to=target,
                at=now,
                reason=reason,
                end_date=now,
            )
        except TransitionConflict:
            raise DagwatchError(
                f"run {run_id!r} of {dag_id!r} changed state while being marked; try again"
            ) from None
        record_audit(
            session,
            actor=actor,
            event=f"dags.mark_{target.value}",
            dag_id=dag_id,
            run_id=run_id,
            extra={"from": result.run_state, "task_instances": len(result.changed)},
            at=now,
        )
        notify_scheduler(session)
    return result
