"""Why a task instance, a run or a DAG is not running: the scheduler's own rules, asked
from outside.

The answer is computed from the metastore with the same functions the scheduler uses
(`engine.scheduling.deps` for dependencies, `engine.scheduling.limits` for slots, the run limit of
`engine.scheduling.run_creation`), so the CLI and the console say exactly what the scheduler would
decide. Besides the one sentence (`Explanation.reason`) an answer names what is in the
way: the upstream tasks and their states, the task instances holding a full pool and
since when, the runs filling `max_active_runs`, the counts behind a limit, and whether a
scheduler is heartbeating at all. Every read is one bounded query, never one per task.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from engine.exceptions import NotFound
from engine.parsing.serialization import SerializedDAG
from engine.scheduling import deps, limits
from engine.states import DAG_RUN_FINISHED, TASK_FINISHED, DagRunState, TaskState
from engine.store import dags as dag_store
from engine.store import explain as reads
from engine.store import runs, scheduling
from engine.store.explain import Holder, RunRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from engine.config import Config
    from engine.store.db import Store


class Why(StrEnum):
    """The kind of answer (`Explanation.kind`); the limits' own names where one applies."""

    FINISHED = "finished"  #: nothing more happens without a clear
    ACTIVE = "active"  #: queued or running: it is not waiting
    RUNNING = "running"  #: a run or DAG with task instances or runs in progress
    PAUSED = "paused"  #: its DAG is paused
    INACTIVE = "inactive"  #: its DAG's file is gone or no longer defines it
    UPSTREAM = "upstream"  #: trigger rule, setup or depends_on_past not met yet
    RETRY = "retry"  #: up_for_retry until its retry delay has passed
    POKE = "poke"  #: a sensor in reschedule mode between pokes
    RUN_LIMIT = "max_active_runs"  #: the run is queued behind max_active_runs
    QUEUED_BEHIND = "queued_behind"  #: older queued runs of its DAG are admitted first
    NOT_DUE = "not_due"  #: a DAG whose next scheduled run is not due yet
    NO_SCHEDULE = "no_schedule"  #: a DAG that runs only when triggered
    READY = "ready"  #: fits every rule: the scheduler takes it on its next tick
    PARALLELISM = limits.WaitReason.PARALLELISM.value
    POOL_FULL = limits.WaitReason.POOL_FULL.value
    POOL_MISSING = limits.WaitReason.POOL_MISSING.value
    POOL_TOO_SMALL = limits.WaitReason.POOL_TOO_SMALL.value
    MAX_ACTIVE_TASKS = limits.WaitReason.DAG_MAX_ACTIVE_TASKS.value
    MAX_ACTIVE_TIS = limits.WaitReason.TASK_MAX_ACTIVE_TIS.value
    MAX_ACTIVE_TIS_PER_RUN = limits.WaitReason.TASK_MAX_ACTIVE_TIS_PER_RUN.value


@dataclass(frozen=True)
class TaskWait:
    """One task instance of a run that is not running, and why."""

    task_id: str
    map_index: int
    state: str
    kind: Why
    reason: str
    due: datetime | None = None


@dataclass(frozen=True)
class Explanation:
    """The scheduler's answer for one task instance, run or DAG."""

    subject: str  #: "task instance", "run" or "DAG"
    state: str  #: the subject's state ("paused" for a paused DAG)
    kind: Why
    reason: str  #: one sentence
    details: tuple[str, ...] = ()  #: the counts behind the reason, one sentence each
    due: datetime | None = None  #: when a retry, poke or next run is due
    upstream: tuple[tuple[str, str], ...] = ()  #: (task_id, state) of its upstream tasks
    holders: tuple[Holder, ...] = ()  #: who holds the full pool, the longest first
    runs: tuple[RunRow, ...] = ()  #: the runs in the way (max_active_runs, older queued)
    waiting: tuple[TaskWait, ...] = ()  #: a run's task instances that wait, and why
    #: a warning when no scheduler heartbeats: then nothing moves, whatever the reason
    scheduler: str | None = None
    held_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def blocked(self) -> bool:
        """Whether the subject is held back (not finished, not queued or running, not a
        DAG whose next run is simply not due or that runs only when triggered)."""
        return self.kind not in _NOT_BLOCKED

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `--output json`: empty parts left out, times as ISO text."""
        data = asdict(self)
        data.pop("held_at")
        data["kind"] = str(self.kind)
        for holder in data["holders"]:
            holder["held_s"] = _age(self.held_at, holder["since"])
        data["upstream"] = [{"task_id": t, "state": s} for t, s in self.upstream]
        return {key: _plain(value) for key, value in data.items() if value not in ((), [], None)}


_NOT_BLOCKED = frozenset({Why.FINISHED, Why.ACTIVE, Why.RUNNING, Why.NOT_DUE, Why.NO_SCHEDULE})


def why_not_running(
    store: Store,
    config: Config,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int | None = None,
) -> str:
    """One sentence: what the task instance waits for, or what state it is in. For a
    mapped task, `map_index` picks the instance (default: the first one not finished)."""
    return explain_task(store, config, dag_id, run_id, task_id, map_index).reason


def explain_task(
    store: Store,
    config: Config,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int | None = None,
    *,
    now: datetime | None = None,
) -> Explanation:
    """Why one task instance is not running, with what is in its way."""
    now = now or datetime.now(UTC)
    with store.session(readonly=True) as session:
        row = dag_store.get_dag(session, dag_id)
        plan = SerializedDAG.from_dict(row.serialized)
        run = runs.get_dag_run(session, dag_id, run_id)
        all_rows = runs.get_task_instances(session, dag_id, run_id)
        ti = _instance(all_rows, task_id, map_index)
        if ti is None:
            which = f"task {task_id!r}"
            if map_index is not None:
                which += f" map index {map_index}"
            raise NotFound(f"{which} not found in run {run_id!r} of {dag_id!r}")
        context = _Context(session, config, now, plan, run, all_rows)
        state = TaskState(ti.state)
        if state in TASK_FINISHED:
            return Explanation("task instance", state, Why.FINISHED, f"finished: {state}")
        if state in (TaskState.QUEUED, TaskState.RUNNING):
            text = f"{state} (on {ti.hostname})" if ti.hostname else str(state)
            return context.note(
                Explanation("task instance", state, Why.ACTIVE, text, details=_active(ti, now))
            )
        if row.is_paused:
            return context.note(
                Explanation("task instance", state, Why.PAUSED, f"DAG {dag_id!r} is paused")
            )
        if run.state == DagRunState.QUEUED:
            found = replace(_queued_run(context, row), subject="task instance", state=state)
            return context.note(found)
        wait = context.wait_of(ti)
        found = Explanation(
            "task instance",
            state,
            wait.kind,
            wait.reason,
            details=_due(wait.due, now),
            due=wait.due,
            upstream=context.upstream_of(task_id) if wait.kind is Why.UPSTREAM else (),
        )
        return context.note(context.with_slot_details(found, [ti]))


def explain_run(
    store: Store, config: Config, dag_id: str, run_id: str, *, now: datetime | None = None
) -> Explanation:
    """Why a run is not running (queued behind max_active_runs, its DAG paused), or for a
    running run, which of its task instances wait and why."""
    now = now or datetime.now(UTC)
    with store.session(readonly=True) as session:
        row = dag_store.get_dag(session, dag_id)
        plan = SerializedDAG.from_dict(row.serialized)
        run = runs.get_dag_run(session, dag_id, run_id)
        state = DagRunState(run.state)
        if state in DAG_RUN_FINISHED:
            return Explanation("run", state, Why.FINISHED, f"finished: {state}")
        context = _Context(session, config, now, plan, run, None)
        if row.is_paused:
            return context.note(Explanation("run", state, Why.PAUSED, f"DAG {dag_id!r} is paused"))
        if state is DagRunState.QUEUED:
            return context.note(_queued_run(context, row))
        context.all_rows = runs.get_task_instances(session, dag_id, run_id)
        return context.note(_running_run(context))


def explain_dag(
    store: Store, config: Config, dag_id: str, *, now: datetime | None = None
) -> Explanation:
    """Why a DAG's next run has not started: paused, not due yet (when it is), its runs
    filling max_active_runs (naming them), a queued run waiting (why), no schedule."""
    now = now or datetime.now(UTC)
    with store.session(readonly=True) as session:
        row = dag_store.get_dag(session, dag_id)
        plan = SerializedDAG.from_dict(row.serialized)
        context = _Context(session, config, now, plan, None, None)
        if not row.is_active:
            text = f"DAG {dag_id!r} is not active: its file is gone or no longer defines it"
            return Explanation("DAG", "inactive", Why.INACTIVE, text)
        if row.is_paused:
            return context.note(
                Explanation("DAG", "paused", Why.PAUSED, f"DAG {dag_id!r} is paused")
            )
        active = reads.runs_of_dag(session, dag_id, [DagRunState.RUNNING, DagRunState.QUEUED])
        queued = [r for r in active if r.state == DagRunState.QUEUED]
        if queued:
            context.run = runs.get_dag_run(session, dag_id, queued[0].run_id)
            found = _queued_run(context, row)
            reason = f"run {queued[0].run_id} is queued: {found.reason}"
            return context.note(replace(found, subject="DAG", state="active", reason=reason))
        return context.note(_next_run(context, row, active))


# -- the parts ------------------------------------------------------------------------


class _Context:
    """What one answer reads, each at most once: the plan, the run's task instances, the
    scheduler's slot selection, the scheduler's heartbeat."""

    def __init__(
        self,
        session: Session,
        config: Config,
        now: datetime,
        plan: SerializedDAG,
        run: Any,
        all_rows: list[Any] | None,
    ) -> None:
        self.session, self.config, self.now, self.plan = session, config, now, plan
        self.run, self.all_rows = run, all_rows
        self._states: dict[str, TaskState] | None = None
        self._past: tuple[dict[str, TaskState] | None] | None = None
        self._slots: _Slots | None = None

    @property
    def max_active_runs(self) -> int:
        return self.plan.max_active_runs or self.config["core.max_active_runs_per_dag"]

    def states(self) -> dict[str, TaskState]:
        if self._states is None:
            self._states = deps.states_of([deps.Decidable.of(ti) for ti in self.all_rows or []])[0]
        return self._states

    def past(self) -> dict[str, TaskState] | None:
        if self._past is None:
            self._past = (_past_states(self.session, self.run, deps.past_task_ids(self.plan)),)
        return self._past[0]

    def slots(self) -> _Slots:
        if self._slots is None:
            self._slots = _select(self.session, self.config, self.plan)
        return self._slots

    def upstream_of(self, task_id: str) -> tuple[tuple[str, str], ...]:
        states = self.states()
        task = self.plan.get_task(task_id)
        return tuple((up, str(states.get(up, "none"))) for up in sorted(task.upstream_task_ids))

    def wait_of(self, ti: Any, *, detailed: bool = True) -> TaskWait:
        """Why this task instance (none, scheduled, up_for_retry or up_for_reschedule) waits.
        Not `detailed`, a sensor's answer leaves out its pokes so far (a query per sensor:
        a run's answer, about many task instances, makes none)."""
        state = TaskState(ti.state)
        kind, due = Why.READY, None
        if state is TaskState.UP_FOR_RETRY:
            kind, due = Why.RETRY, ti.next_retry_at
            reason = f"retry not due until {due.isoformat() if due else '?'}"
        elif state is TaskState.UP_FOR_RESCHEDULE:
            kind, due = Why.POKE, ti.next_retry_at
            reason = (
                _reschedule_reason(self.session, ti)
                if detailed
                else f"sensor waiting for its next poke at {_iso(due)} (reschedule mode); it "
                "holds no executor or pool slot until then"
            )
        elif state is TaskState.NONE:
            waiting = deps.why_waiting(self.plan, ti.task_id, self.states(), self.past())
            reason = waiting or "ready: the scheduler decides it next"
            kind = Why.UPSTREAM if waiting else Why.READY
        else:
            slot = self.slots().waiting.get(ti.id)
            if slot is None:
                reason = "ready: it fits every limit and is queued on the next tick"
            else:
                kind = Why(slot.value)
                candidate = self.slots().candidates[ti.id]
                reason = limits.describe(slot, candidate, self.slots().pool_sizes.get(ti.pool))
        return TaskWait(ti.task_id, ti.map_index, state, kind, reason, due)

    def with_slot_details(self, found: Explanation, tis: list[Any]) -> Explanation:
        """The counts behind a slot limit, and who holds a full pool (one query)."""
        if found.kind not in _SLOT_KINDS:
            return found
        slots = self.slots()
        ti = tis[0]
        occupancy = slots.occupancy
        details: list[str] = []
        holders: list[Holder] = []
        if found.kind in (Why.POOL_FULL, Why.POOL_TOO_SMALL, Why.POOL_MISSING):
            size = slots.pool_sizes.get(ti.pool)
            used = occupancy.pool_used.get(ti.pool, 0)
            if size is not None:
                details.append(
                    f"pool {ti.pool!r} has {size} slot(s): {used} held by queued and running "
                    f"task instances, {max(0, size - used)} open; this one needs {ti.pool_slots}"
                )
            pools = sorted({t.pool for t in tis})
            holders = reads.pool_holders(self.session, pools)
        elif found.kind is Why.PARALLELISM:
            details.append(
                f"core.parallelism is {self.config['core.parallelism']}: {occupancy.total} "
                f"task instances are queued or running ({occupancy.running} running, "
                f"{occupancy.queued} queued)"
            )
        elif found.kind is Why.MAX_ACTIVE_TASKS:
            cap = self.plan.max_active_tasks or self.config["core.max_active_tasks_per_dag"]
            active = occupancy.dag_active.get(self.plan.dag_id, 0)
            details.append(
                f"max_active_tasks of {self.plan.dag_id!r} is {cap}: {active} of its task "
                "instances are queued or running"
            )
        else:
            active = occupancy.task_active.get((self.plan.dag_id, ti.task_id), 0)
            details.append(f"{active} instance(s) of task {ti.task_id!r} are queued or running")
        ahead = slots.chosen_before(ti.id)
        if ahead:
            details.append(
                f"{ahead} task instance(s) of higher priority take slots first on this tick"
            )
        return replace(found, details=(*found.details, *details), holders=tuple(holders))

    def note(self, found: Explanation) -> Explanation:
        """Add the scheduler's heartbeat warning to an answer about something unfinished."""
        if found.kind is Why.FINISHED:
            return replace(found, held_at=self.now)
        return replace(found, scheduler=_scheduler_warning(self), held_at=self.now)


_SLOT_KINDS = frozenset(Why(reason.value) for reason in limits.WaitReason)


@dataclass
class _Slots:
    """The scheduler's slot selection over every scheduled task instance, as on its tick."""

    selection: limits.Selection
    candidates: dict[int, scheduling.TiRow]
    pool_sizes: dict[str, int]
    occupancy: scheduling.Occupancy

    @property
    def waiting(self) -> dict[int, limits.WaitReason]:
        return self.selection.waiting

    def chosen_before(self, ti_id: int) -> int:
        order = list(self.candidates)
        position = order.index(ti_id) if ti_id in self.candidates else len(order)
        chosen = {ti.id for ti in self.selection.chosen}
        return sum(1 for other in order[:position] if other in chosen)


def _select(session: Session, config: Config, plan: SerializedDAG) -> _Slots:
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
    selection = limits.select_executable(
        candidates,
        occupancy=occupancy,
        pool_sizes=pool_sizes,
        open_slots=max(0, config["core.parallelism"] - occupancy.total),
        limits_of=limits_of,
    )
    return _Slots(selection, {c.id: c for c in candidates}, pool_sizes, occupancy)


def _queued_run(context: _Context, row: Any) -> Explanation:
    """A queued run: max_active_runs reached (naming the running runs), or older queued
    runs admitted first, or free to start on the next tick."""
    run, limit = context.run, context.max_active_runs
    running = reads.runs_of_dag(context.session, run.dag_id, [DagRunState.RUNNING])
    count = scheduling.running_run_counts(context.session).get(run.dag_id, 0)
    if count >= limit:
        names = ", ".join(r.run_id for r in running)
        more = f" and {count - len(running)} more" if count > len(running) else ""
        return Explanation(
            "run",
            run.state,
            Why.RUN_LIMIT,
            f"run limit: the run is queued, DAG {run.dag_id!r} is at max_active_runs ({limit})",
            details=(f"running now ({count} of {limit}): {names}{more}",),
            runs=tuple(running),
        )
    ahead = reads.queued_runs_before(context.session, run.dag_id, run.logical_date)
    if len(ahead) >= limit - count:
        return Explanation(
            "run",
            run.state,
            Why.QUEUED_BEHIND,
            f"the run is queued behind {len(ahead)} older queued run(s) of {run.dag_id!r}, "
            f"which max_active_runs ({limit}, {count} running) admits first",
            details=("admitted first: " + ", ".join(r.run_id for r in ahead),),
            runs=tuple(ahead),
        )
    return Explanation(
        "run", run.state, Why.READY, "the run is queued: the scheduler starts it on its next tick"
    )


def _running_run(context: _Context) -> Explanation:
    """A running run: what runs, and why each task instance that is not running waits."""
    rows = [ti for ti in context.all_rows or [] if ti.state != TaskState.REMOVED]
    counts = Counter(TaskState(ti.state) for ti in rows)
    active = counts[TaskState.RUNNING] + counts[TaskState.QUEUED]
    waiting_rows = [
        ti
        for ti in rows
        if TaskState(ti.state) not in TASK_FINISHED
        and TaskState(ti.state) not in (TaskState.QUEUED, TaskState.RUNNING)
    ]
    waits = [context.wait_of(ti, detailed=False) for ti in waiting_rows]
    summary = ", ".join(f"{state} {n}" for state, n in sorted(counts.items()))
    details = [f"task instances: {summary}"] if summary else []
    run = context.run
    if active:
        reason = (
            f"running: {counts[TaskState.RUNNING]} task instance(s) running, "
            f"{counts[TaskState.QUEUED]} queued"
        )
        found = Explanation("run", run.state, Why.RUNNING, reason, details=tuple(details))
        return replace(found, waiting=tuple(waits))
    if not waits:
        reason = "every task instance has finished: the scheduler ends the run on its next tick"
        return Explanation("run", run.state, Why.READY, reason, details=tuple(details))
    first = min(waits, key=_urgency)
    found = Explanation(
        "run",
        run.state,
        first.kind,
        f"nothing of this run is running or queued: {first.task_id} waits, {first.reason}",
        details=tuple(details),
        due=first.due,
        upstream=context.upstream_of(first.task_id) if first.kind is Why.UPSTREAM else (),
        waiting=tuple(waits),
    )
    blocked = [ti for ti, wait in zip(waiting_rows, waits, strict=True) if wait.kind == first.kind]
    return context.with_slot_details(found, blocked)


def _urgency(wait: TaskWait) -> tuple[int, datetime]:
    """What the run waits on first: a limit, then the next retry or poke, then upstream."""
    order = 0 if wait.kind in _SLOT_KINDS else 1 if wait.due else 2
    return order, wait.due or datetime.max.replace(tzinfo=UTC)


def _next_run(context: _Context, row: Any, active: list[RunRow]) -> Explanation:
    """A DAG with no queued run: is its next one due, and can it be created?"""
    plan, now = context.plan, context.now
    due = row.next_dagrun_create_after
    running = tuple(r for r in active if r.state == DagRunState.RUNNING)
    if due is None or due >= scheduling.NEVER:
        if not plan.timetable.periodic:
            found = Explanation(
                "DAG",
                "active",
                Why.NO_SCHEDULE,
                f"schedule {plan.timetable.summary}: it runs only when triggered",
            )
        else:
            found = Explanation(
                "DAG", "active", Why.NO_SCHEDULE, "no further scheduled run (its end_date passed)"
            )
    elif due > now:
        found = Explanation(
            "DAG",
            "active",
            Why.NOT_DUE,
            f"its next run is due at {due.isoformat()}, in {_duration(due - now)}",
            due=due,
        )
    elif len(active) >= context.max_active_runs:
        names = ", ".join(r.run_id for r in active)
        found = Explanation(
            "DAG",
            "active",
            Why.RUN_LIMIT,
            f"its next run is due since {due.isoformat()}, but DAG {plan.dag_id!r} is at "
            f"max_active_runs ({context.max_active_runs}): {names}",
            due=due,
            runs=tuple(active),
        )
    else:
        found = Explanation(
            "DAG",
            "active",
            Why.READY,
            f"its next run is due since {due.isoformat()}: the scheduler creates it on its "
            "next tick",
            due=due,
        )
    if running and found.kind is not Why.RUN_LIMIT:
        names = ", ".join(r.run_id for r in running)
        found = replace(found, details=(f"running now: {names}",), runs=running)
    return found


def _scheduler_warning(context: _Context) -> str | None:
    """A sentence when no scheduler heartbeats within scheduler.heartbeat_timeout."""
    latest = reads.latest_scheduler_heartbeat(context.session)
    timeout = context.config["scheduler.heartbeat_timeout"]
    if latest is None:
        return "no scheduler is running: nothing is scheduled until one starts (dagwatch scheduler)"
    age = (context.now - latest).total_seconds()
    if age > timeout:
        return (
            f"the scheduler is not heartbeating: its last heartbeat is {age:.0f} s old "
            f"(scheduler.heartbeat_timeout {timeout:g} s), so nothing moves until it is back"
        )
    return None


def _instance(rows: list[Any], task_id: str, map_index: int | None) -> Any:
    """The row of `task_id` at `map_index`; by default its unexpanded placeholder, or its
    first unfinished instance (the first one when all finished)."""
    mine = [ti for ti in rows if ti.task_id == task_id and ti.state != TaskState.REMOVED]
    if map_index is not None:
        return next((ti for ti in mine if ti.map_index == map_index), None)
    mine.sort(key=lambda ti: (TaskState(ti.state) in TASK_FINISHED, ti.map_index))
    return mine[0] if mine else None


def _reschedule_reason(session: Session, ti: Any) -> str:
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


def _past_states(session: Session, run: Any, task_ids: set[str]) -> dict[str, TaskState] | None:
    """The previous run's states of the tasks that depend on the past, as the scheduler
    reads them; None when no task does or there is no previous run."""
    if not task_ids:
        return None
    previous = scheduling.previous_run_ids(session, [run]).get(run.id)
    if previous is None:
        return None
    states = scheduling.task_states_of_runs(session, [(run.dag_id, previous)], task_ids)
    return states.get((run.dag_id, previous), {})


def _due(due: datetime | None, now: datetime) -> tuple[str, ...]:
    """How long until a retry or a poke is due (the scheduler moves it then)."""
    if due is None:
        return ()
    if due <= now:
        return ("due now: the scheduler moves it on its next tick",)
    return (f"due in {_duration(due - now)}",)


def _active(ti: Any, now: datetime) -> tuple[str, ...]:
    """Since when a queued or running task instance has been so."""
    if ti.state == TaskState.QUEUED and ti.queued_at:
        return (
            f"queued for {_duration(now - ti.queued_at)}: handed to the executor, waiting "
            f"for a worker of queue {ti.queue!r} to start it",
        )
    if ti.state == TaskState.RUNNING and ti.start_date:
        return (f"running for {_duration(now - ti.start_date)}",)
    return ()


def _duration(delta: Any) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d"


def duration_text(seconds: float | None) -> str:
    """Seconds as an operator reads them: 45 s, 20 min, 3 h 5 min, 2 d."""
    if seconds is None or seconds != seconds:
        return "-"
    return _duration(timedelta(seconds=seconds))


def _iso(when: datetime | None) -> str:
    return when.isoformat() if when else "?"


def _age(now: datetime, since: datetime | None) -> float | None:
    return None if since is None else round((now - since).total_seconds(), 1)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value
