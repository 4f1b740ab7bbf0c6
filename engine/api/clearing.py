"""Clearing task instances: back to state none, so the scheduler runs them again.

Shared by `clear_task_instances` and by a backfill that re-runs failed runs. Everything is
batched: one SELECT for the task instances, one UPDATE per (state, retries) group through
the transition write path, one XCom DELETE per distinct set of cleared tasks.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from engine.exceptions import DagwatchError, NotFound, TransitionConflict
from engine.sdk.schedules import coerce_utc
from engine.sdk.setup_teardown import with_setups_and_teardowns
from engine.states import DAG_RUN_FINISHED, TASK_FAILED, TASK_OCCUPYING, DagRunState, TaskState
from engine.store import dags, runs, scheduling
from engine.store.audit import record_audit
from engine.store.db import Store
from engine.store.models import Dag, DagRun, TaskInstance
from engine.store.transitions import transition_dag_run, transition_task_instances
from engine.store.wakeup import notify_scheduler

if TYPE_CHECKING:
    from engine.parsing.serialization import SerializedDAG


@dataclass(frozen=True)
class TaskRef:
    """One task instance as an action saw it: `state` is its state before the action."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str
    try_number: int
    reason: str | None = None  # why it was left alone


@dataclass
class ClearResult:
    """What a clear did (or, with dry_run, would do)."""

    cleared: list[TaskRef] = field(default_factory=list)
    left_running: list[TaskRef] = field(default_factory=list)
    requeued_runs: list[str] = field(default_factory=list)
    dry_run: bool = False


def utc_now(now: datetime | None) -> datetime:
    """`now` (default: the clock) as aware UTC, so every row of one action has one time."""
    return coerce_utc(now if now is not None else datetime.now(UTC))


def load_plan(session: Session, dag_id: str) -> tuple[Dag, SerializedDAG]:
    """The active DAG's row and its structure, from the metastore (no user code)."""
    # rebuilding the tasks imports the authoring API: only the verbs that need them pay
    from engine.parsing.serialization import SerializedDAG

    row = dags.get_dag(session, dag_id)
    return row, SerializedDAG.from_dict(row.serialized)


#: Why a queued or running task instance is not cleared.
_BUSY: dict[str, str] = {
    TaskState.QUEUED: "handed to an executor; clear it once it ends",
    TaskState.RUNNING: "its attempt is executing; clear it once it ends",
}


def _ref(ti: TaskInstance, reason: str | None = None) -> TaskRef:
    return TaskRef(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.state, ti.try_number, reason)


def clear_rows(
    session: Session,
    plan: SerializedDAG,
    rows: list[runs.TaskInstanceWithRun],
    now: datetime,
    reason: str,
    *,
    requeue: Iterable[DagRun] = (),
    dry_run: bool = False,
) -> ClearResult:
    """Reset `rows` to state none; queue their finished runs (and `requeue`) again.

    Queued and running task instances are left alone: their attempt is executing and
    resetting it under the executor would lose it. A cleared task gets its retries
    again (max_tries = try_number + retries), as in Airflow.
    """
    result = ClearResult(dry_run=dry_run)
    before = {ti.id: _ref(ti) for ti, _state, _pk in rows}  # the UPDATEs sync the ORM rows
    runs_of: dict[str, tuple[str, int]] = {ti.run_id: (st, pk) for ti, st, pk in rows}
    runs_of.update({run.run_id: (run.state, run.id) for run in requeue})
    todo: dict[tuple[str, int], list[int]] = defaultdict(list)
    for ti, _state, _pk in rows:
        if ti.state in TASK_OCCUPYING:
            result.left_running.append(_ref(ti, _BUSY[ti.state]))
        elif ti.state != TaskState.NONE:
            retries = plan.get_task(ti.task_id).retries if plan.has_task(ti.task_id) else 0
            todo[(ti.state, retries)].append(ti.id)
    clearable = {ti_id for ids in todo.values() for ti_id in ids}
    changed: set[int] = set()
    for (state, retries), ids in todo.items():
        if dry_run:
            changed.update(ids)
            continue
        changed.update(
            transition_task_instances(
                session,
                ids,
                expected=TaskState(state),
                to=TaskState.NONE,
                at=now,
                reason=reason,
                values={"max_tries": TaskInstance.try_number + retries, "next_retry_at": None},
            )
        )
    cleared_by_run: dict[str, set[str]] = defaultdict(set)
    for ti_id, ref in before.items():
        if ti_id in changed:
            result.cleared.append(ref)
            cleared_by_run[ref.run_id].add(ref.task_id)
        elif ti_id in clearable:
            result.left_running.append(replace(ref, reason="its state changed while clearing"))
    requeue_ids = {run.run_id for run in requeue} | set(cleared_by_run)
    for run_id in [run_id for run_id in runs_of if run_id in requeue_ids]:
        state, run_pk = runs_of[run_id]
        if state not in DAG_RUN_FINISHED:
            continue
        if dry_run or _requeue(session, run_pk, DagRunState(state), now, reason):
            result.requeued_runs.append(run_id)
    if not dry_run:
        runs.delete_xcoms(session, plan.dag_id, cleared_by_run)
        # a sensor cleared between pokes (reschedule mode) starts a new try next time
        scheduling.close_open_tries(session, sorted(changed), now=now, error=reason)
        _fold_mapped(session, plan, [ti for ti, _state, _pk in rows], changed, now, reason)
    return result


def _fold_mapped(
    session: Session,
    plan: SerializedDAG,
    rows: list[TaskInstance],
    cleared: set[int],
    now: datetime,
    reason: str,
) -> None:
    """A mapped task cleared whole goes back to its unexpanded placeholder, so the next
    run of it expands again from its inputs' new values (their length may differ)."""
    by_task: dict[tuple[str, str], list[TaskInstance]] = defaultdict(list)
    for ti in rows:
        if plan.has_task(ti.task_id) and plan.get_task(ti.task_id).is_mapped:
            by_task[(ti.run_id, ti.task_id)].append(ti)
    for tis in by_task.values():
        indexed = [ti for ti in tis if ti.map_index >= 0]
        if not indexed or not all(ti.id in cleared for ti in indexed):
            continue
        transition_task_instances(
            session, [ti.id for ti in indexed], expected=TaskState.NONE, to=TaskState.REMOVED,
            at=now, reason=f"{reason}: the mapped task will expand again",
        )  # fmt: skip
        if not any(ti.map_index < 0 for ti in tis):
            scheduling.add_map_indexes(session, indexed[0].id, [-1])


def _requeue(session: Session, run_pk: int, state: DagRunState, now: datetime, reason: str) -> bool:
    """A finished run goes back to QUEUED, as if new, so the scheduler starts it again."""
    try:
        transition_dag_run(
            session,
            run_pk,
            expected=state,
            to=DagRunState.QUEUED,
            at=now,
            reason=reason,
            queued_at=now,
            start_date=None,
            end_date=None,
            last_scheduling_decision=None,
        )
    except TransitionConflict:  # re-queued by someone else meanwhile
        return False
    return True


def _task_selection(plan: SerializedDAG, task_regex: str | None, downstream: bool) -> set[str]:
    """The DAG's tasks matching the regex (re.search), plus everything downstream of them,
    plus their setups and teardowns."""
    if task_regex is None:
        return set(plan.task_ids)
    try:
        pattern = re.compile(task_regex)
    except re.error as exc:
        raise DagwatchError(f"task regex {task_regex!r} is not valid: {exc}") from None
    selected = {task_id for task_id in plan.task_ids if pattern.search(task_id)}
    if not selected:
        raise NotFound(f"no task of DAG {plan.dag_id!r} matches {task_regex!r}")
    if downstream:
        for task_id in list(selected):
            selected |= plan.get_task(task_id).get_flat_relative_ids()
    # as Airflow: work re-runs inside its resources, so their setups/teardowns run again
    return with_setups_and_teardowns(plan, selected)


def clear_task_instances(
    store: Store,
    dag_id: str,
    *,
    task_regex: str | None = None,
    run_id: str | None = None,
    downstream: bool = False,
    only_failed: bool = False,
    actor: str = "cli",
    now: datetime | None = None,
    dry_run: bool = False,
) -> ClearResult:
    """Reset task instances to state none so the scheduler runs them again.

    Selects the DAG's task instances (of one run, or of all), of the tasks matching
    `task_regex` (re.search) plus, with `downstream`, every task downstream of them, plus
    the setups they run inside and those setups' teardowns (Airflow's rule); `only_failed`
    keeps the failed and upstream_failed ones. Queued and running ones
    are left alone and reported. Cleared ones lose their XComs and get their retries
    back; their finished runs are queued again. `dry_run` reports without writing.
    """
    now = utc_now(now)
    with store.session(readonly=dry_run) as session:
        _row, plan = load_plan(session, dag_id)
        task_ids = _task_selection(plan, task_regex, downstream)
        if run_id is not None:
            runs.get_dag_run(session, dag_id, run_id)
        rows = runs.task_instances_with_runs(
            session,
            dag_id,
            run_ids=None if run_id is None else [run_id],
            task_ids=task_ids,
            states=TASK_FAILED if only_failed else None,
        )
        result = clear_rows(session, plan, rows, now, f"cleared by {actor}", dry_run=dry_run)
        if not dry_run:
            record_audit(
                session,
                actor=actor,
                event="tasks.clear",
                dag_id=dag_id,
                run_id=run_id,
                extra={
                    "task_regex": task_regex,
                    "downstream": downstream,
                    "only_failed": only_failed,
                    "cleared": len(result.cleared),
                    "left_running": len(result.left_running),
                    "requeued_runs": result.requeued_runs,
                },
                at=now,
            )
            notify_scheduler(session)
    return result
