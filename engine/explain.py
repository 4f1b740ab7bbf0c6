"""Why a task instance is not running: the scheduler's own rules, asked from outside.

The answer is computed from the metastore with the same functions the scheduler uses
(`engine.deps` for dependencies, `engine.limits` for slots), so the CLI and the console
say exactly what the scheduler would decide.
"""

from __future__ import annotations

from typing import Any

from engine import deps, limits
from engine.serialization import SerializedDAG
from engine.states import TASK_FINISHED, TaskState
from engine.store import dags as dag_store
from engine.store import runs, scheduling


def why_not_running(
    store: Any, config: Any, dag_id: str, run_id: str, task_id: str, map_index: int | None = None
) -> str:
    """One sentence: what the task instance waits for, or what state it is in. For a
    mapped task, `map_index` picks the instance (default: the first one not finished)."""
    with store.session(readonly=True) as session:
        row = dag_store.get_dag(session, dag_id)
        plan = SerializedDAG.from_dict(row.serialized)
        run = runs.get_dag_run(session, dag_id, run_id)
        all_rows = runs.get_task_instances(session, dag_id, run_id)
        ti = _instance(all_rows, task_id, map_index)
        if ti is None:
            from engine.exceptions import NotFound

            which = f"task {task_id!r}"
            if map_index is not None:
                which += f" map index {map_index}"
            raise NotFound(f"{which} not found in run {run_id!r} of {dag_id!r}")
        state = TaskState(ti.state)
        if state in TASK_FINISHED:
            return f"finished: {state}"
        if state in (TaskState.QUEUED, TaskState.RUNNING):
            return f"{state} (on {ti.hostname})" if ti.hostname else str(state)
        if row.is_paused:
            return f"DAG {dag_id!r} is paused"
        if run.state == "queued":
            limit = plan.max_active_runs or config["core.max_active_runs_per_dag"]
            if scheduling.running_run_counts(session).get(dag_id, 0) >= limit:
                return (
                    f"run limit: the run is queued, DAG {dag_id!r} is at max_active_runs ({limit})"
                )
            return "the run is queued: the scheduler starts it on its next tick"
        if state is TaskState.UP_FOR_RETRY:
            return (
                f"retry not due until {ti.next_retry_at.isoformat() if ti.next_retry_at else '?'}"
            )
        if state is TaskState.UP_FOR_RESCHEDULE:
            return _reschedule_reason(session, ti)
        if state is TaskState.NONE:
            states = deps.states_of([deps.Decidable.of(other) for other in all_rows])[0]
            past = _past_states(session, run, deps.past_task_ids(plan))
            return (
                deps.why_waiting(plan, task_id, states, past)
                or "ready: the scheduler decides it next"
            )
        return _slot_reason(session, config, plan, ti.id)


def _instance(rows: list[Any], task_id: str, map_index: int | None) -> Any:
    """The row of `task_id` at `map_index`; by default its unexpanded placeholder, or its
    first unfinished instance (the first one when all finished)."""
    mine = [ti for ti in rows if ti.task_id == task_id and ti.state != TaskState.REMOVED]
    if map_index is not None:
        return next((ti for ti in mine if ti.map_index == map_index), None)
    mine.sort(key=lambda ti: (TaskState(ti.state) in TASK_FINISHED, ti.map_index))
    return mine[0] if mine else None


def _reschedule_reason(session: Any, ti: Any) -> str:
    """A sensor in reschedule mode between pokes: when it pokes next, since when it waits,
    and that it holds no slot meanwhile (in poke mode it would hold one all along)."""
    due = ti.next_retry_at.isoformat() if ti.next_retry_at else "?"
    open_try = runs.open_rescheduled_try(session, ti.id, ti.try_number)
    pokes = f"{open_try.reschedules} poke(s)" if open_try else "its pokes"
    since = f" since {open_try.start_date.isoformat()}" if open_try else ""
    return (
        f"sensor waiting for its next poke at {due} (reschedule mode: {pokes} in try "
        f"{ti.try_number}{since} found the condition unmet); it holds no executor or pool "
        "slot until then"
    )


def _past_states(session: Any, run: Any, task_ids: set[str]) -> dict[str, TaskState] | None:
    """The previous run's states of the tasks that depend on the past, as the scheduler
    reads them; None when no task does or there is no previous run."""
    if not task_ids:
        return None
    previous = scheduling.previous_run_ids(session, [run]).get(run.id)
    if previous is None:
        return None
    states = scheduling.task_states_of_runs(session, [(run.dag_id, previous)], task_ids)
    return states.get((run.dag_id, previous), {})


def _slot_reason(session: Any, config: Any, plan: SerializedDAG, ti_id: int) -> str:
    """A scheduled task instance: which limit holds it back, as the scheduler would see it."""
    candidates = scheduling.scheduled_candidates(session, limit=100_000)
    plans = {plan.dag_id: plan}
    for dag_id, serialized in scheduling.serialized_dags(
        session, {c.dag_id for c in candidates} - {plan.dag_id}
    ).items():
        plans[dag_id] = SerializedDAG.from_dict(serialized)

    def limits_of(ti: Any) -> limits.TaskLimits:
        dag = plans[ti.dag_id]
        task = dag.task_dict.get(ti.task_id)
        return limits.TaskLimits(
            max_active_tasks=dag.max_active_tasks or config["core.max_active_tasks_per_dag"],
            max_active_tis_per_dag=getattr(task, "max_active_tis_per_dag", None),
            max_active_tis_per_dagrun=getattr(task, "max_active_tis_per_dagrun", None),
        )

    pool_sizes = scheduling.pool_sizes(session)
    occupancy = scheduling.occupancy(session)
    open_slots = max(0, config["core.parallelism"] - occupancy.total)
    selection = limits.select_executable(
        candidates,
        occupancy=occupancy,
        pool_sizes=pool_sizes,
        open_slots=open_slots,
        limits_of=limits_of,
    )
    reason = selection.waiting.get(ti_id)
    if reason is None:
        return "ready: it fits every limit and is queued on the next tick"
    ti = next(c for c in candidates if c.id == ti_id)
    return limits.describe(reason, ti, pool_sizes.get(ti.pool))
