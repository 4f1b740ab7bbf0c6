"""`dags test`: one DAG run in this process, one task at a time, recorded in the metastore.

It follows the same rules as the scheduler (trigger rules and run outcome from
`engine.scheduling.deps`, the attempt from `engine.execution.runner`), so a DAG that passes
here behaves the same when scheduled; only the concurrency limits are moot with one task at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.exceptions import DagwatchError
from engine.execution import runner
from engine.parsing.serialization import SerializedDAG, serialize_dag
from engine.scheduling import deps, expansion
from engine.states import DAG_RUN_FINISHED, DagRunState, TaskState
from engine.store import runs, transitions
from engine.store.dags import dag_hash
from engine.store.models import TaskInstance

if TYPE_CHECKING:
    from engine.config import Config
    from engine.store.db import Store

Printer = Callable[[str], None]


@dataclass
class RunReport:
    """How the run ended and what each attempt did."""

    dag_id: str
    run_id: str
    state: DagRunState
    attempts: list[runner.AttemptResult] = field(default_factory=list)
    final_states: dict[str, TaskState] = field(default_factory=dict)
    reason: str | None = None


def _prepare_run(store: Store, dag: Any, serialized: dict, logical_date: datetime, conf: dict, now):
    run_id = f"test__{logical_date.isoformat()}"
    with store.session() as session:
        existing = runs.find_dag_run_by_date(session, dag.dag_id, logical_date)
        if existing is not None and existing.run_type != "test":
            raise DagwatchError(
                f"DAG {dag.dag_id!r} already has a {existing.run_type} run "
                f"{existing.run_id!r} at {logical_date.isoformat()}; pick another --logical-date"
            )
        if existing is not None:
            runs.delete_dag_run(session, existing)
            session.flush()
        interval = dag.timetable.infer_manual_data_interval(logical_date)
        runs.create_dag_run(
            session,
            serialized,
            run_id=run_id,
            run_type="test",
            logical_date=logical_date,
            data_interval=(interval.start, interval.end),
            conf=conf,
            state=DagRunState.RUNNING,
            now=now,
            dag_hash=dag_hash(serialized),
        )
    return run_id


def _states(store: Store, dag_id: str, run_id: str) -> dict[tuple[str, int], TaskInstance]:
    """(task_id, map_index) -> task instance row, detached."""
    with store.session() as session:
        rows = runs.get_task_instances(session, dag_id, run_id)
        session.expunge_all()
    return {(row.task_id, row.map_index): row for row in rows}


def _move(
    store: Store, rows: list[TaskInstance], to: TaskState, now: datetime, reason: str
) -> None:
    """Transition rows (grouped by their current state) to `to`."""
    by_state: dict[str, list[int]] = {}
    for row in rows:
        by_state.setdefault(row.state, []).append(row.id)
    changed: set[int] = set()
    with store.session() as session:
        for state, ids in by_state.items():
            changed.update(
                transitions.transition_task_instances(
                    session, ids, expected=TaskState(state), to=to, at=now, reason=reason
                )
            )
    for row in rows:
        if row.id in changed:
            row.state = to.value


#: States that wait for their `next_retry_at`: what the wait is for, and the reason
#: recorded when it ends. Like Airflow's `dags test`, a sensor in reschedule mode is
#: waited for and poked again; other ready tasks run first.
_WAITING = {
    TaskState.UP_FOR_RETRY: ("retry", "retry delay passed"),
    TaskState.UP_FOR_RESCHEDULE: ("poke", "next poke due"),
}


def _next_ready(tis: dict[Any, TaskInstance], order: dict[str, int]) -> TaskInstance | None:
    ready = [ti for ti in tis.values() if ti.state == TaskState.SCHEDULED]
    if not ready:
        return None
    return min(ready, key=lambda ti: (-ti.priority_weight, order[ti.task_id], ti.map_index))


def run_dag_in_process(
    store: Store,
    config: Config,
    dag: Any,
    *,
    logical_date: datetime,
    conf: dict | None = None,
    echo: Printer | None = None,
    clock: runner.Clock = runner.utcnow,
    sleep: Callable[[float], None] = time.sleep,
) -> RunReport:
    """Run `dag` once for `logical_date`; return when the run has ended."""
    echo = echo or (lambda line: None)
    serialized = serialize_dag(dag)
    plan = SerializedDAG.from_dict(serialized)
    dag.params.resolve(conf or {})  # a bad conf is refused before anything is written
    run_id = _prepare_run(store, dag, serialized, logical_date, conf or {}, clock())
    report = RunReport(dag.dag_id, run_id, DagRunState.RUNNING)
    order = {task.task_id: i for i, task in enumerate(plan.topological_sort())}
    echo(f"run {run_id} of {dag.dag_id}")
    while report.state not in DAG_RUN_FINISHED:
        tis = _states(store, dag.dag_id, run_id)
        if not _step(store, config, dag, plan, tis, order, report, echo, clock, sleep):
            report.state, report.reason = DagRunState.FAILED, "deadlock: no task can run"
    _finish_run(store, dag, run_id, report, clock)
    echo(f"run {run_id}: {report.state}" + (f" ({report.reason})" if report.reason else ""))
    return report


def _step(store, config, dag, plan, tis, order, report, echo, clock, sleep) -> bool:
    """Advance the run by one decision or one attempt; False when nothing can progress."""
    rows = [deps.Decidable.of(ti) for ti in tis.values()]
    states, instances = deps.states_of(rows)
    outcome = deps.run_outcome(plan, states)
    if outcome is not None:
        report.state, report.final_states = outcome, states
        return True
    ready = expansion.ready_to_expand((plan.dag_id, report.run_id), plan, rows, None)
    if ready:
        with store.session() as session:
            expansion.expand(session, ready, clock(), config["core.max_map_length"])
        return True
    decisions = deps.decide(plan, states, instances=instances)
    if decisions:
        for target in set(decisions.values()):
            moved = [
                tis[key if isinstance(key, tuple) else (key, -1)]
                for key, to in decisions.items()
                if to is target
            ]
            _move(store, moved, target, clock(), reason="trigger rule")
        return True
    waiting = [ti for ti in tis.values() if ti.state in _WAITING]
    ti = _next_ready(tis, order)
    if ti is None and waiting:
        due = min(waiting, key=lambda row: row.next_retry_at)
        verb, reason = _WAITING[TaskState(due.state)]
        wait = (due.next_retry_at - clock()).total_seconds()
        if wait > 0:
            echo(f"  waiting {wait:.1f} s to {verb} {due.task_id}")
            sleep(wait)
        _move(store, [due], TaskState.SCHEDULED, clock(), reason=reason)
        return True
    if ti is None:
        return False
    _move(store, [ti], TaskState.QUEUED, clock(), reason="dags test")
    result = runner.run_attempt(store, config, dag, ti.id, clock=clock)
    report.attempts.append(result)
    echo(_describe(result))
    return True


def _describe(result: runner.AttemptResult) -> str:
    name = result.task_id + (f"[{result.map_index}]" if result.map_index >= 0 else "")
    line = f"  {name:<40} {result.state:<16} try {result.try_number}"
    line += f"  {result.duration:.2f} s"
    return line + (f"\n      {result.error}" if result.error else "")


def _finish_run(store: Store, dag: Any, run_id: str, report: RunReport, clock) -> None:
    now = clock()
    with store.session() as session:
        run = runs.get_dag_run(session, dag.dag_id, run_id)
        transitions.transition_dag_run(
            session,
            run.id,
            expected=DagRunState.RUNNING,
            to=report.state,
            at=now,
            reason=report.reason,
            end_date=now,
        )
        session.expunge(run)
    run.state, run.end_date = report.state, now
    kind = "on_success_callback" if report.state is DagRunState.SUCCESS else "on_failure_callback"
    context = {
        "dag": dag,
        "dag_run": run,
        "run_id": run_id,
        "reason": report.reason or str(report.state),
        "logical_date": run.logical_date,
    }
    runner.run_callbacks(
        store, getattr(dag, kind, None), context, kind, None, dag_id=dag.dag_id, run_id=run_id
    )


def run_task_in_scratch(
    config: Config, dag: Any, task_id: str, *, logical_date: datetime, scratch: Path
) -> runner.AttemptResult:
    """Run one task once against a throwaway metastore in `scratch` (`tasks test`)."""
    from engine.store.db import Store
    from engine.store.migrate import migrate

    if dag.has_task(task_id) and dag.get_task(task_id).is_mapped:
        raise DagwatchError(
            f"task {task_id!r} is mapped: its instances exist only in a run; "
            f"use `dagwatch dags test {dag.dag_id}`"
        )
    store = Store(f"sqlite:///{scratch / 'scratch.db'}")
    try:
        migrate(store)
        config = config.with_overrides(logging__base_log_folder=str(scratch / "logs"))
        run_id = _prepare_run(store, dag, serialize_dag(dag), logical_date, {}, logical_date)
        ti = _states(store, dag.dag_id, run_id)[(task_id, -1)]
        _move(store, [ti], TaskState.SCHEDULED, logical_date, reason="tasks test")
        _move(store, [ti], TaskState.QUEUED, logical_date, reason="tasks test")
        return runner.run_attempt(store, config, dag, ti.id)
    finally:
        store.dispose()
