"""The scheduler: a short driver around one step, `tick(now)`, with the clock injected.

One tick: collect ended attempts → create due runs → admit queued runs → decide the
task instances of the runs that changed (trigger rules, retries, run outcomes,
timeouts) → queue what fits every limit → every few seconds, fail zombies. All of it
in a handful of batched queries; user code never runs here (callbacks go to the
executor, parsing to a side thread or `dagwatch dag-processor`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from engine import hooks, supervision
from engine.clock import SYSTEM, Clock, Every
from engine.exceptions import StoreError
from engine.execution.base import (
    AttemptEvent,
    AttemptRequest,
    CallbackRequest,
    Executor,
    external_ids,
)
from engine.observability import emit
from engine.parsing.serialization import SerializedDAG
from engine.scheduling import deps, expansion, limits, run_creation
from engine.scheduling.dirty import DirtyRuns, RunChange
from engine.sdk.retry import retry_delay
from engine.states import TASK_OCCUPYING, DagRunState, TaskState
from engine.store import callbacks as callback_store
from engine.store import coordination, runs, scheduling, transitions
from engine.store import workers as store_workers
from engine.store.models import Dag, DagRun
from engine.store.scheduling import TiRow
from engine.store.wakeup import ChangeWatcher

log = logging.getLogger(__name__)

#: Seconds between zombie checks and between job heartbeats.
HOUSEKEEPING_INTERVAL = 5.0
#: Longest pause after repeated metastore errors.
MAX_ERROR_BACKOFF = 30.0
#: Seconds between two emissions of the loop's gauges (slots, starving, executable...).
GAUGE_INTERVAL = 1.0


def _record_slots(report: TickReport, occupancy: Any, pool_sizes: dict[str, int]) -> None:
    report.queued_tis = occupancy.queued
    report.running_tis = occupancy.running
    report.open_slots_by_pool = {
        pool: size - occupancy.pool_used.get(pool, 0) for pool, size in pool_sizes.items()
    }


def _owned_by(ti: TiRow, event: AttemptEvent) -> bool:
    """Whether the lost attempt is the one the task instance records (not a newer one)."""
    if ti.state is TaskState.QUEUED:
        return True  # it never started: the lost process was its only attempt
    return ti.state is TaskState.RUNNING and (event.pid is None or ti.pid == event.pid)


@dataclass
class TickReport:
    """What one tick did and saw: the per-loop counts metrics and the console read."""

    runs_created: int = 0
    runs_started: int = 0
    runs_finished: int = 0
    decisions: int = 0
    queued: int = 0
    executable: int = 0
    starving: dict[str, int] = field(default_factory=dict)
    waiting: dict[int, str] = field(default_factory=dict)
    zombies: int = 0
    #: runs decided this tick / all running runs
    active_runs: int = 0
    running_runs: int = 0
    #: runs that ended this tick, with their outcome (for run metrics)
    finished: list[tuple[DagRun, DagRunState]] = field(default_factory=list)
    #: task instances queued / running at the start of the queueing step
    queued_tis: int = 0
    running_tis: int = 0
    #: pool -> slots left (negative when a pool was shrunk below what it holds)
    open_slots_by_pool: dict[str, int] = field(default_factory=dict)
    duration: float = 0.0

    @property
    def busy(self) -> bool:
        """Whether the tick changed anything (then the next tick may find more to do)."""
        return bool(
            self.runs_created or self.runs_started or self.runs_finished or self.decisions
        ) or bool(self.queued)


#: A run whose changed tasks would bring more than this share of its task instances into
#: a decision is decided whole (one query for all its rows beats many narrow lookups).
PARTIAL_SHARE = 0.5
#: What a run's decision reads and decides: (tasks to decide, task ids to read); None
#: stands for the whole run.
Scope = tuple[list[Any], set[str]]
#: The states a decision can move a task instance out of.
DECIDABLE = (TaskState.NONE, TaskState.UP_FOR_RETRY, TaskState.UP_FOR_RESCHEDULE)
#: States that wait for `next_retry_at` (a retry delay, a sensor's next poke), then go to
#: scheduled; neither holds an executor or pool slot meanwhile.
WAITING_UNTIL = (TaskState.UP_FOR_RETRY, TaskState.UP_FOR_RESCHEDULE)


@dataclass
class _Plan:
    digest: str
    fileloc: str
    dag: SerializedDAG
    order: list[Any]
    #: tasks whose state in the previous run a decision reads (depends_on_past and the
    #: downstream of wait_for_downstream tasks); empty when no task depends on the past
    past_task_ids: frozenset[str]
    position: dict[str, int] = field(default_factory=dict)  #: task_id -> index in `order`
    has_mapped: bool = False  #: whether any task is mapped (expansion is then checked)

    def __post_init__(self) -> None:
        self.position = {task.task_id: index for index, task in enumerate(self.order)}
        self.has_mapped = any(task.is_mapped for task in self.order)

    def affected(self, changed: set[str]) -> tuple[list[Any], set[str]]:
        """What a change to `changed` can move: the tasks downstream of them (transitively,
        since decisions feed forward) in topological order, and the task ids whose states
        deciding those needs."""
        tasks = self.dag.task_dict
        todo = [down for task_id in changed for down in tasks[task_id].downstream_task_ids]
        reached: set[str] = set()
        while todo:
            task_id = todo.pop()
            if task_id not in reached:
                reached.add(task_id)
                todo.extend(tasks[task_id].downstream_task_ids)
        return self._in_order(reached), set(changed) | self._reads(reached)

    def waiting(self, waiting: set[str]) -> tuple[list[Any], set[str]]:
        """What deciding the still-waiting tasks needs: them in topological order, and the
        task ids whose states they read."""
        return self._in_order(waiting), self._reads(waiting)

    def _reads(self, deciding: set[str]) -> set[str]:
        """The tasks whose states deciding `deciding` reads: them, their upstream, the
        setups they wait for and the inputs of mapped tasks."""
        tasks, indirect = self.dag.task_dict, self.dag.indirect_setups
        needed = set(deciding)
        for task_id in deciding:
            task = tasks[task_id]
            needed.update(task.upstream_task_ids)
            needed.update(indirect.get(task_id, ()))
            needed.update(task.mapping_inputs)  # expanding reads the tasks it maps over
        return needed

    def _in_order(self, task_ids: set[str]) -> list[Any]:
        tasks = self.dag.task_dict
        return [tasks[task_id] for task_id in sorted(task_ids, key=self.position.__getitem__)]


class Scheduler:
    """Creates runs, decides task instances and feeds the executor; see `tick`."""

    def __init__(
        self,
        store: Any,
        config: Any,
        executor: Executor,
        *,
        clock: Clock = SYSTEM,
        registry: hooks.Registry | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.executor = executor
        self.clock = clock
        self._watcher = ChangeWatcher(store)
        self.job_id: int | None = None
        self.last_report = TickReport()
        self._plans: dict[str, _Plan] = {}
        #: runs to decide next tick, with what changed in them
        self._dirty = DirtyRuns()
        # The periodic work of the loop, each due by the injected clock. A full pass over
        # the running runs and run creation/admission come once a loop interval (admission
        # sooner when hurried: a run ended, another process changed something).
        interval = self.config["scheduler.loop_interval"]
        self._full_pass_timer = Every(clock, interval)
        self._admission_timer = Every(clock, interval)
        self._housekeeping_timer = Every(clock, HOUSEKEEPING_INTERVAL)
        self._gauge_timer = Every(clock, GAUGE_INTERVAL)
        #: DAGs whose plan this tick checked against the metastore (their hash, paused)
        self._checked_this_tick: set[str] = set()
        self._loop_gauges = emit.LoopGauges()
        self._never_fits_reported: set[int] = set()
        self.registry = registry if registry is not None else hooks.current()
        self._tick_hooks = hooks.TickHookRunner(self.registry.tick_hooks, clock.monotonic)
        self._services: list[hooks.Service] = []
        #: callback requests written by transactions of this tick, for the executor
        self._callbacks_after_commit: list[CallbackRequest] = []

    # -- plans (serialized DAGs, cached by hash) -------------------------------------

    def _plan(
        self, dag_id: str, digest: str, fileloc: str, serialized: dict | None = None
    ) -> _Plan:
        cached = self._plans.get(dag_id)
        if cached is not None and cached.digest == digest:
            return cached
        if serialized is None:
            with self.store.session(readonly=True) as session:
                serialized = scheduling.serialized_dags(session, [dag_id])[dag_id]
        dag = SerializedDAG.from_dict(serialized)
        order = dag.topological_sort()
        plan = _Plan(digest, fileloc, dag, order, frozenset(deps.past_task_ids(dag)))
        self._plans[dag_id] = plan
        return plan

    def _plan_of_row(self, row: Dag) -> SerializedDAG:
        return self._plan(row.dag_id, row.dag_hash, row.fileloc, row.serialized).dag

    def plan_of(self, dag_id: str) -> SerializedDAG | None:
        """The cached serialized DAG of `dag_id`, if this scheduler has loaded it."""
        plan = self._plans.get(dag_id)
        return plan.dag if plan else None

    def _max_active_runs(self, dag_id: str) -> int:
        plan = self._plans.get(dag_id)
        configured = plan.dag.max_active_runs if plan else None
        return configured or self.config["core.max_active_runs_per_dag"]

    # -- the step --------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> TickReport:
        """One scheduling step at `now` (the clock's time by default); safe to call again at
        once. The periodic work (admission, full passes, housekeeping, gauges, tick hooks)
        is due by the scheduler's clock."""
        started = time.perf_counter()  # measures the tick's work; decisions read the clock
        now = now or self.clock.now()
        report = TickReport()
        self._checked_this_tick = set()
        self._handle_events(self.executor.collect(), now)
        if self._admission_due():
            with self.store.session() as session:
                coordination.lock(session, coordination.RUNS_LOCK)  # one scheduler at once
                report.runs_created = len(self._create_runs(session, now))
                report.runs_started = len(self._start_runs(session, now))
        self._schedule_runs(now, report)
        if report.runs_finished:  # a run's end may let a queued run of its DAG start
            self._admission_timer.hurry()
        self._queue_executable(now, report)
        if self._housekeeping_timer.due():
            self._housekeeping(now, report)
        if self._tick_hooks:
            self._tick_hooks.run(
                hooks.TickContext(
                    now, self.store, self.config, self.plan_of, report, self.executor,
                    self.request_callbacks,
                )
            )  # fmt: skip
        self.flush_callbacks()
        report.duration = time.perf_counter() - started
        self.last_report = report
        self._emit(report)
        return report

    def _admission_due(self) -> bool:
        """Whether this tick creates due runs and admits queued ones: when woken by a
        change another process made (a trigger, an unpause), after a run ended, and once
        a loop interval. Not on every tick: a tick woken by an ended attempt has nothing
        to admit, and on PostgreSQL each of those queries is a round trip."""
        return self._admission_timer.due()

    def _emit(self, report: TickReport) -> None:
        emit.tick(report)
        if self._gauge_timer.due():
            self._loop_gauges.send(report, self.executor)

    def _create_runs(self, session: Any, now: datetime) -> list[tuple[str, str]]:
        return run_creation.create_due_runs(
            session,
            now,
            plan_of=self._plan_of_row,
            default_max_active_runs=self.config["core.max_active_runs_per_dag"],
        )

    def _start_runs(self, session: Any, now: datetime) -> list[tuple[int, str, str]]:
        queued = scheduling.runs_in_state(session, DagRunState.QUEUED)  # read once per tick
        rows = scheduling.dag_rows(session, [run.dag_id for run in queued])
        for dag_id, (digest, fileloc, _) in rows.items():
            self._plan(dag_id, digest, fileloc)
        started = run_creation.start_queued_runs(
            session,
            now,
            queued,
            max_active_runs_of=self._max_active_runs,
            paused=lambda dag_id: rows.get(dag_id, ("", "", True))[2],
        )
        for _, dag_id, run_id in started:
            self._dirty.run_changed(dag_id, run_id)
        started_ids = {run_pk for run_pk, _, _ in started}
        for run in queued:
            if run.id in started_ids:
                emit.run_started(run, now)
        return started

    # -- deciding task instances -----------------------------------------------------

    def _runs_to_decide(self, session: Any, report: TickReport) -> list[tuple[DagRun, RunChange]]:
        """Running runs that changed since the last tick, with what changed; all of them
        once a loop interval (which also finds retries that became due)."""
        running = scheduling.runs_in_state(session, DagRunState.RUNNING)
        report.running_runs = len(running)
        return self._dirty.take(running, full=self._full_pass_timer.due())

    def _claim(
        self, session: Any, changes: list[tuple[DagRun, RunChange]]
    ) -> list[tuple[DagRun, RunChange]]:
        """The runs this scheduler may decide now: on PostgreSQL those whose row it locked
        (another scheduler deciding a run holds its row); the others stay marked for the
        next tick."""
        if not changes or not coordination.is_postgres(session):
            return changes
        locked = scheduling.lock_running_runs(session, [run.id for run, _ in changes])
        for run, change in changes:
            if run.id not in locked:
                self._dirty.put_back(run, change)
        return [(run, changed) for run, changed in changes if run.id in locked]

    def _schedule_runs(self, now: datetime, report: TickReport) -> None:
        with self.store.session() as session:
            changes = self._claim(session, self._runs_to_decide(session, report))
            report.active_runs = len(changes)
            if not changes:
                return
            dag_info = scheduling.dag_rows(session, {run.dag_id for run, _ in changes})
            changes = [
                (r, changed) for r, changed in changes if self._load_plan(r.dag_id, dag_info)
            ]
            self._checked_this_tick.update(r.dag_id for r, _ in changes)
            waiting = scheduling.task_ids_in_states(
                session,
                [(r.dag_id, r.run_id) for r, change in changes if change.waiting],
                DECIDABLE,
            )
            scopes = {
                run.id: self._scope(run, change, waiting.get((run.dag_id, run.run_id), set()), now)
                for run, change in changes
            }
            tis = self._rows_in_scope(session, changes, scopes)
            self._expand_mapped(session, changes, scopes, tis, now)
            past = self._past_states(session, [run for run, _ in changes])
            moves: dict[tuple[TaskState, TaskState], list[int]] = {}
            settled: list[tuple[DagRun, _Plan, dict[str, TaskState] | None]] = []
            for run, _ in changes:
                plan = self._plans[run.dag_id]
                rows = tis.get((run.dag_id, run.run_id), [])
                if self._timed_out(session, run, plan, rows, now, report):
                    continue
                scope = scopes[run.id]
                deciding = time.perf_counter()
                states = self._decide_run(
                    plan, rows, past.get(run.id), now, moves, None if scope is None else scope[0]
                )
                emit.dependency_check(run.dag_id, time.perf_counter() - deciding)
                settled.append((run, plan, states if scope is None else None))
            for (expected, to), ids in moves.items():
                changed = transitions.transition_task_instances(
                    session, ids, expected=expected, to=to, at=now, reason="scheduler",
                    values={"scheduled_at": now} if to is TaskState.SCHEDULED else None,
                )  # fmt: skip
                report.decisions += len(changed)
            for run, plan, states in self._with_outcome_states(session, settled):
                outcome = deps.run_outcome(plan.dag, states)
                if outcome is not None:
                    self._finish_run(session, run, plan, outcome, None, now, report)
            self._emit_finished(session, report.finished, now)

    def _scope(
        self, run: DagRun, change: RunChange, waiting: set[str], now: datetime
    ) -> Scope | None:
        """What a run's decision covers, or None when the whole run must be read (a new
        run, a timeout, a wide change): after a change, the changed tasks and what lies
        downstream of them; on a full pass, the tasks still `waiting`."""
        plan = self._plans[run.dag_id]
        timeout = plan.dag.dagrun_timeout
        if change.whole or (timeout and run.start_date and now - run.start_date > timeout):
            return None
        tasks = waiting if change.waiting else change.tasks
        known = {task_id for task_id in tasks if task_id in plan.dag.task_dict}
        if change.waiting:
            order, needed = plan.waiting(known)
        else:
            order, needed = plan.affected(known)
        if len(known) < len(tasks) or len(needed) > PARTIAL_SHARE * len(plan.order):
            return None
        return order, needed

    def _rows_in_scope(
        self, session: Any, changes: list[tuple[DagRun, Any]], scopes: dict[int, Scope | None]
    ) -> dict[tuple[str, str], list[TiRow]]:
        """The task instances each run's decision reads: all of them or just its scope."""
        whole = [(r.dag_id, r.run_id) for r, _ in changes if scopes[r.id] is None]
        rows = scheduling.task_instances_of_runs(session, whole) if whole else {}
        some = {
            (r.dag_id, r.run_id): scope[1]
            for r, _ in changes
            if (scope := scopes[r.id]) is not None
        }
        if some:
            rows.update(scheduling.task_instances_of_run_tasks(session, some))
        return rows

    def _with_outcome_states(
        self, session: Any, settled: list[tuple[DagRun, _Plan, dict[str, TaskState] | None]]
    ) -> list[tuple[DagRun, _Plan, dict[str, TaskState]]]:
        """Each settled run with the states its outcome is judged on. A run decided on part
        of its rows is read whole only once none of its task instances is unfinished."""
        partial = [(run.dag_id, run.run_id) for run, _, states in settled if states is None]
        unfinished = scheduling.runs_with_unfinished_tasks(session, partial) if partial else set()
        done = [key for key in partial if key not in unfinished]
        rows = scheduling.task_instances_of_runs(session, done) if done else {}
        judged = []
        for run, plan, states in settled:
            if states is None:
                key = (run.dag_id, run.run_id)
                if key in unfinished:
                    continue
                states = deps.states_of(rows.get(key, []))[0]
            judged.append((run, plan, states))
        return judged

    def _emit_finished(
        self, session: Any, finished: list[tuple[DagRun, DagRunState]], now: datetime
    ) -> None:
        if not finished:
            return
        scheduled = [(run.dag_id, run.run_id) for run, _ in finished if run.run_type == "scheduled"]
        first_starts = scheduling.first_task_starts(session, scheduled) if scheduled else {}
        for run, outcome in finished:
            emit.run_finished(run, outcome.value, now, first_starts.get((run.dag_id, run.run_id)))

    def _load_plan(self, dag_id: str, dag_info: dict) -> bool:
        """Cache the DAG's plan; False when its runs must wait (paused or gone)."""
        digest, fileloc, paused = dag_info.get(dag_id, ("", "", True))
        if paused or not digest:
            return False
        self._plan(dag_id, digest, fileloc)
        return True

    def _past_states(self, session: Any, runs: list[DagRun]) -> dict:
        """run.id -> task_id -> state in the run before it, for the tasks that depend on
        the past (two queries for all runs: their previous runs, then those states)."""
        needing = [
            run
            for run in runs
            if run.dag_id in self._plans and self._plans[run.dag_id].past_task_ids
        ]
        if not needing:
            return {}
        previous = scheduling.previous_run_ids(session, needing)
        before = {
            run.id: (run.dag_id, previous_id)
            for run in needing
            if (previous_id := previous[run.id])
        }
        task_ids = {t for run in needing for t in self._plans[run.dag_id].past_task_ids}
        states = scheduling.task_states_of_runs(session, before.values(), task_ids)
        return {run_id: states.get(key, {}) for run_id, key in before.items()}

    def _expand_mapped(
        self,
        session: Any,
        changes: list[tuple[DagRun, Any]],
        scopes: dict[int, Scope | None],
        tis: dict[tuple[str, str], list[TiRow]],
        now: datetime,
    ) -> None:
        """Expand the mapped tasks being decided whose inputs are ready, and re-read the
        task instances of their runs, so the new instances are decided in this tick."""
        ready = []
        for run, _ in changes:
            plan = self._plans[run.dag_id]
            if not plan.has_mapped:
                continue
            key, scope = (run.dag_id, run.run_id), scopes[run.id]
            deciding = None if scope is None else [task.task_id for task in scope[0]]
            ready.extend(expansion.ready_to_expand(key, plan.dag, tis.get(key, []), deciding))
        if not ready:
            return
        max_length = self.config["core.max_map_length"]
        expanded = expansion.expand(session, ready, now, max_length)
        if expanded:
            reread = {key: {row.task_id for row in tis.get(key, [])} for key in expanded}
            tis.update(scheduling.task_instances_of_run_tasks(session, reread))

    def _decide_run(
        self,
        plan: _Plan,
        rows: list[TiRow],
        past_states: dict | None,
        now: datetime,
        moves: dict[tuple[TaskState, TaskState], list[int]],
        order: list[Any] | None = None,
    ) -> dict[str, TaskState]:
        """Decide `order` (the run's affected tasks; all of them when None) on `rows`;
        returns each read task's state once the decisions apply."""
        by_key = {(row.task_id, row.map_index): row for row in rows}
        states, instances = deps.states_of(rows)
        decisions, after = deps.decide_with_states(
            plan.dag,
            states,
            order=plan.order if order is None else order,
            past_states=past_states,
            instances=instances,
        )
        for key, to in decisions.items():
            row = by_key[key if isinstance(key, tuple) else (key, -1)]
            moves.setdefault((TaskState.NONE, to), []).append(row.id)
        for row in rows:
            if row.state in WAITING_UNTIL and (
                row.next_retry_at is None or row.next_retry_at <= now
            ):
                moves.setdefault((row.state, TaskState.SCHEDULED), []).append(row.id)
        return after

    def _timed_out(
        self,
        session: Any,
        run: DagRun,
        plan: _Plan,
        rows: list[TiRow],
        now: datetime,
        report: TickReport,
    ) -> bool:
        """Fail a run past its dagrun_timeout: skip what waits, stop what runs."""
        timeout = plan.dag.dagrun_timeout
        if not timeout or run.start_date is None or now - run.start_date <= timeout:
            return False
        reason = f"dagrun_timeout of {timeout} exceeded"
        self._stop_unfinished(session, rows, now, reason)
        self._finish_run(session, run, plan, DagRunState.FAILED, reason, now, report)
        return True

    def _finish_run(
        self,
        session: Any,
        run: DagRun,
        plan: _Plan,
        outcome: DagRunState,
        reason: str | None,
        now: datetime,
        report: TickReport,
    ) -> None:
        transitions.transition_dag_run(
            session, run.id, expected=DagRunState.RUNNING, to=outcome, at=now, reason=reason,
            end_date=now,
        )  # fmt: skip
        report.runs_finished += 1
        report.finished.append((run, outcome))
        log.info("run %s of %s ended: %s", run.run_id, run.dag_id, outcome)
        kind = "on_success_callback" if outcome is DagRunState.SUCCESS else "on_failure_callback"
        if getattr(plan.dag, f"has_{kind}", False):
            request = CallbackRequest(run.dag_id, run.run_id, plan.fileloc, kind, reason=reason)
            self.request_callbacks(session, [request], now)

    def request_callbacks(
        self, session: Any, requests: Sequence[CallbackRequest], now: datetime
    ) -> None:
        """Write these requests in the transaction of their cause; they go to the executor
        once it has committed (`flush_callbacks`), and survive this process until they ran."""
        ids = callback_store.add(session, requests, now, self.job_id)
        ready = [
            dataclasses.replace(request, request_id=request_id)
            for request, request_id in zip(requests, ids, strict=True)
        ]
        callback_store.on_commit(session, lambda: self._callbacks_after_commit.extend(ready))

    def flush_callbacks(self) -> None:
        """Hand the callback requests of committed transactions to the executor."""
        requests, self._callbacks_after_commit = self._callbacks_after_commit, []
        if requests:
            self.executor.queue_callbacks(requests)

    def _adopt_orphan_callbacks(self, session: Any, now: datetime) -> None:
        """Callback requests a scheduler that is gone never ran: run them here."""
        cutoff = now - timedelta(seconds=self.config["scheduler.heartbeat_timeout"])
        host = socket.getfqdn()
        rows = callback_store.orphans(
            session, lambda job: callback_store.job_gone(job, cutoff, host), self.job_id
        )
        if not rows:
            return
        callback_store.adopt(session, [row.id for row in rows], self.job_id)
        ready = [
            CallbackRequest(
                row.dag_id, row.run_id, row.fileloc, row.kind, task_id=row.task_id,
                reason=row.reason, map_index=row.map_index, request_id=row.id,
            )
            for row in rows
        ]  # fmt: skip
        callback_store.on_commit(session, lambda: self._callbacks_after_commit.extend(ready))
        log.warning("running %d callback request(s) a stopped scheduler left", len(rows))

    def _stop_unfinished(self, session: Any, rows: list[TiRow], now: datetime, reason: str) -> None:
        """A timed-out run: waiting tasks are skipped, running attempts stopped."""
        by_state: dict[TaskState, list[int]] = {}
        for row in rows:
            by_state.setdefault(row.state, []).append(row.id)
        for state in (TaskState.NONE, TaskState.SCHEDULED, *WAITING_UNTIL):
            if by_state.get(state):
                skipped = transitions.transition_task_instances(
                    session, by_state[state], expected=state, to=TaskState.SKIPPED, at=now,
                    reason=reason,
                )  # fmt: skip
                if state is TaskState.UP_FOR_RESCHEDULE:  # sensors between pokes: end the try
                    scheduling.close_open_tries(
                        session, skipped, now=now, error=reason, state=TaskState.SKIPPED
                    )
        occupying = [row.id for row in rows if row.state in TASK_OCCUPYING]
        if occupying:
            self.executor.terminate(occupying, reason)

    # -- queueing --------------------------------------------------------------------

    def _queue_executable(self, now: datetime, report: TickReport) -> None:
        open_slots = self.executor.open_slots
        with self.store.session() as session:
            # Pools and limits are counted and spent by one scheduler at a time: the lock
            # is held until this transaction commits the task instances it queues.
            coordination.lock(session, coordination.QUEUE_LOCK)
            occupancy = scheduling.occupancy(session)
            pool_sizes = scheduling.pool_sizes(session)
            _record_slots(report, occupancy, pool_sizes)
            if coordination.is_postgres(session):  # core.parallelism counts every scheduler
                open_slots = max(
                    0, min(open_slots, self.config["core.parallelism"] - occupancy.total)
                )
            candidates = scheduling.scheduled_candidates(
                session, limit=max(64, open_slots * 4), lock=True
            )
            if not candidates:
                return
            # the plans of DAGs decided this tick were checked against the metastore just now
            unchecked = {ti.dag_id for ti in candidates} - self._checked_this_tick
            info = scheduling.dag_rows(session, unchecked) if unchecked else {}
            for dag_id, (digest, fileloc, _) in info.items():
                self._plan(dag_id, digest, fileloc)
            selection = limits.select_executable(
                candidates,
                occupancy=occupancy,
                pool_sizes=pool_sizes,
                open_slots=open_slots,
                limits_of=self._task_limits,
            )
            report.executable = len(selection.chosen)
            report.starving = dict(selection.starving)
            by_id = {ti.id: ti for ti in candidates}
            report.waiting = {
                ti_id: limits.describe(reason, by_id[ti_id], pool_sizes.get(by_id[ti_id].pool))
                for ti_id, reason in selection.waiting.items()
            }
            self._report_never_fits(selection, by_id, report)
            if not selection.chosen:
                return
            queued = transitions.transition_task_instances(
                session,
                [ti.id for ti in selection.chosen],
                expected=TaskState.SCHEDULED,
                to=TaskState.QUEUED,
                at=now,
                values={
                    "queued_at": now,
                    "executor": self.executor.name,
                    "queued_by_job_id": self.job_id,
                },
            )
            message_ids = external_ids(self.executor, queued)
            store_workers.record_external_ids(session, message_ids)
        chosen = [ti for ti in selection.chosen if ti.id in set(queued)]
        self.executor.queue([self._request(ti, message_ids.get(ti.id)) for ti in chosen])
        report.queued = len(chosen)

    def _task_limits(self, ti: TiRow) -> limits.TaskLimits:
        plan = self._plans[ti.dag_id].dag
        task = plan.task_dict.get(ti.task_id)
        return limits.TaskLimits(
            max_active_tasks=plan.max_active_tasks or self.config["core.max_active_tasks_per_dag"],
            max_active_tis_per_dag=getattr(task, "max_active_tis_per_dag", None),
            max_active_tis_per_dagrun=getattr(task, "max_active_tis_per_dagrun", None),
        )

    def _request(self, ti: TiRow, external_id: str | None = None) -> AttemptRequest:
        plan = self._plans[ti.dag_id]
        task = plan.dag.task_dict.get(ti.task_id)
        timeout = getattr(task, "execution_timeout", None)
        return AttemptRequest(
            ti_id=ti.id,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            fileloc=plan.fileloc,
            queue=ti.queue,
            priority_weight=ti.priority_weight,
            execution_timeout=timeout.total_seconds() if timeout else None,
            external_id=external_id,
        )

    def _report_never_fits(self, selection: limits.Selection, by_id: dict, report) -> None:
        for ti_id, reason in selection.waiting.items():
            if reason in limits.NEVER_FITS and ti_id not in self._never_fits_reported:
                self._never_fits_reported.add(ti_id)
                ti = by_id[ti_id]
                log.error(
                    "task %s.%s in run %s %s",
                    ti.dag_id,
                    ti.task_id,
                    ti.run_id,
                    report.waiting[ti_id],
                    extra={"action": "task_never_fits", "reason": str(reason)},
                )

    # -- ended attempts, zombies -----------------------------------------------------

    def _handle_events(self, events: list[AttemptEvent], now: datetime) -> None:
        for event in events:
            self._dirty.task_changed(event.dag_id, event.run_id, event.task_id)
        lost = [event for event in events if event.lost]
        if lost:
            with self.store.session() as session:
                rows = scheduling.task_instances_of_runs(
                    session, [(e.dag_id, e.run_id) for e in lost]
                )
                by_id = {ti.id: ti for tis in rows.values() for ti in tis}
                for event in lost:
                    ti = by_id.get(event.ti_id)
                    if ti is not None and _owned_by(ti, event):
                        self._fail_attempt(session, ti, now, event.error or "attempt lost")

    def _fail_attempt(
        self, session: Any, ti: TiRow, now: datetime, reason: str, *, zombie: bool = False
    ) -> None:
        """End an attempt that cannot record its own outcome; retry it if it may."""
        # A queued attempt never started, so it never counted itself: count it here, unless
        # it was a rescheduled sensor's next poke, which belongs to its still open try.
        counted = ti.state is TaskState.RUNNING or (
            ti.try_number > 0
            and runs.open_rescheduled_try(session, ti.id, ti.try_number) is not None
        )
        attempt = ti.try_number if counted else ti.try_number + 1
        to = TaskState.UP_FOR_RETRY if attempt <= ti.max_tries else TaskState.FAILED
        changed = transitions.transition_task_instances(
            session,
            [ti.id],
            expected=ti.state,
            to=to,
            at=now,
            reason=reason,
            values={
                "try_number": attempt,
                "end_date": now,
                "next_retry_at": self._next_retry_at(ti, attempt, now)
                if to is TaskState.UP_FOR_RETRY
                else None,
            },
        )
        if not changed:
            return
        scheduling.close_open_tries(session, [ti.id], now=now, error=reason, state=to)
        log.warning("task %s.%s in run %s: %s -> %s", ti.dag_id, ti.task_id, ti.run_id, reason, to)
        plan = self._plans.get(ti.dag_id)
        kind = "on_retry_callback" if to is TaskState.UP_FOR_RETRY else "on_failure_callback"
        task = plan.dag.task_dict.get(ti.task_id) if plan else None
        operator = getattr(task, "operator", None)
        emit.attempt_finished(ti.dag_id, ti.task_id, operator, to, None, zombie=zombie)
        if plan is not None and task is not None and getattr(task, f"has_{kind}", False):
            request = CallbackRequest(
                ti.dag_id,
                ti.run_id,
                plan.fileloc,
                kind,
                task_id=ti.task_id,
                reason=reason,
                map_index=ti.map_index,
            )
            self.request_callbacks(session, [request], now)

    def _next_retry_at(self, ti: TiRow, attempt: int, now: datetime) -> datetime:
        plan = self._plans.get(ti.dag_id)
        task = plan.dag.task_dict.get(ti.task_id) if plan else None
        if task is None:
            return now
        return now + retry_delay(
            base=task.retry_delay or timedelta(0),
            try_number=attempt,
            exponential=task.retry_exponential_backoff,
            max_delay=task.max_retry_delay,
            seed=f"{ti.dag_id}#{ti.task_id}#{ti.run_id}",
        )

    def _housekeeping(self, now: datetime, report: TickReport) -> None:
        cutoff = now - timedelta(seconds=self.config["scheduler.heartbeat_timeout"])
        with self.store.session() as session:
            if self.job_id is not None:
                open_slots = self.executor.open_slots
                scheduling.heartbeat_job(
                    session,
                    self.job_id,
                    now,
                    last_loop_seconds=self.last_report.duration,
                    slots_open=open_slots,
                    slots_used=max(0, self.executor.parallelism - open_slots),
                )
                emit.heartbeat()
            self._adopt(session, now)
            held = self.executor.running_ti_ids()
            for ti in scheduling.stale_running(session, cutoff):
                reason = (
                    f"zombie: no heartbeat for {self.config['scheduler.heartbeat_timeout']:g} s"
                )
                if ti.id in held:
                    self.executor.terminate([ti.id], reason)
                    continue
                self._fail_attempt(session, ti, now, reason, zombie=True)
                self._dirty.task_changed(ti.dag_id, ti.run_id, ti.task_id)
                report.zombies += 1
            self._adopt_orphan_callbacks(session, now)

    def _adopt(self, session: Any, now: datetime) -> None:
        """Notice schedulers whose heartbeat stopped, and take over what they queued and
        never started. (Attempts they started either finish in their surviving worker and
        record themselves, or stop heartbeating and are failed as zombies, then retried.)"""
        threshold = self.config["scheduler.scheduler_health_check_threshold"]
        dead = scheduling.fail_stale_jobs(
            session, "scheduler", now - timedelta(seconds=threshold), now
        )
        for job_id, hostname, pid in dead:
            log.warning(
                "scheduler job %s (pid %s on %s) sent no heartbeat for %g s: marked failed, "
                "its queued task instances are adopted",
                job_id, pid, hostname, threshold,
                extra={"action": "scheduler_lost", "job_id": job_id},
            )  # fmt: skip
        emit.schedulers_lost(len(dead))
        self._requeue_orphans(session, scheduling.adoptable_queued(session))

    def _requeue_orphans(
        self, session: Any, orphans: list[TiRow], *, starting: bool = False
    ) -> None:
        """queued → scheduled for attempts whose scheduler is gone: counted as cleared when
        found as this scheduler starts, as adopted when found while it runs."""
        if not orphans:
            return
        adopted = transitions.transition_task_instances(
            session,
            [ti.id for ti in orphans],
            expected=TaskState.QUEUED,
            to=TaskState.SCHEDULED,
            at=self.clock.now(),
            reason="adopted: queued by a scheduler that is gone",
            values={"queued_by_job_id": None},
        )
        changed = set(adopted)
        for ti in orphans:
            if ti.id in changed:
                self._dirty.task_changed(ti.dag_id, ti.run_id, ti.task_id)
        if adopted and starting:
            log.warning("reset %d orphaned queued task instances", len(adopted))
            emit.orphans_cleared(len(adopted))
        elif adopted:
            log.warning("adopted %d task instances queued by a gone scheduler", len(adopted))
            emit.orphans_adopted(len(adopted))

    # -- start, loop, stop -----------------------------------------------------------

    def start(self) -> None:
        """Register the job, reset attempts a dead scheduler left queued, start workers."""
        now = self.clock.now()
        with self.store.session() as session:
            threshold = self.config["scheduler.scheduler_health_check_threshold"]
            scheduling.fail_stale_jobs(
                session, "scheduler", now - timedelta(seconds=threshold), now
            )
            self.job_id = scheduling.start_job(session, "scheduler", os.getpid(), now)
            if coordination.is_postgres(session):  # other schedulers may be running: take
                # only what schedulers that are gone queued (or what no scheduler owns)
                orphans = scheduling.adoptable_queued(session, include_unowned=True)
                self._requeue_orphans(session, orphans, starting=True)
                stranded: list[int] = []
            else:  # the only scheduler: nothing queued before it started is running
                stranded = [ti.id for ti in scheduling.tis_in_state(session, TaskState.QUEUED)]
            if stranded:
                transitions.transition_task_instances(
                    session,
                    stranded,
                    expected=TaskState.QUEUED,
                    to=TaskState.SCHEDULED,
                    at=now,
                    reason="orphaned: queued by a scheduler that is gone",
                )
                log.warning("reset %d orphaned queued task instances", len(stranded))
                emit.orphans_cleared(len(stranded))
            self._adopt_orphan_callbacks(session, now)
        self.executor.start()
        self.flush_callbacks()
        for factory in self.registry.services:
            service = hooks.build_service(factory, self.config, self.store, self.clock)
            with supervision.adopting_threads():  # a service's threads are the scheduler's
                service.start()
            self._services.append(service)

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        drain: bool = False,
        grace: float = 30.0,
    ) -> None:
        """Tick until `stop` is set (or, with `drain`, until no run is left active)."""
        stop = stop or threading.Event()
        self.start()
        self._watcher.prime()
        backoff = 0.0
        try:
            while not stop.is_set():
                try:
                    report = self.tick(self.clock.now())
                    backoff = 0.0
                except (SQLAlchemyError, StoreError) as exc:
                    backoff = min(MAX_ERROR_BACKOFF, max(0.5, backoff * 2))
                    log.error("scheduler tick failed, retrying in %.1f s: %s", backoff, exc)
                    stop.wait(backoff)
                    continue
                if drain and self._drained(report):
                    break
                if not report.busy:
                    self._wait(stop)
        finally:
            self.shutdown(grace)

    def _wait(self, stop: threading.Event) -> None:
        """Sleep until an attempt ends or the loop interval passes."""
        interval = self.config["scheduler.loop_interval"]
        if self.executor.running_ti_ids():
            self.executor.wait(interval)
        elif self._watcher.wait(interval, stop):  # idle: a trigger or clear wakes it at once
            self._admission_timer.hurry()

    def _drained(self, report: TickReport) -> bool:
        if report.busy or self.executor.running_ti_ids():
            return False
        with self.store.session(readonly=True) as session:
            active = scheduling.active_run_counts(session)
        return not active

    def shutdown(self, grace: float) -> None:
        """Stop queueing, give running attempts `grace` seconds, then stop them."""
        self._watcher.close()
        self.executor.end(grace)
        for service in reversed(self._services):
            try:
                service.stop(grace)
            except Exception as exc:  # one service's failure must not keep the others running
                log.error("service %s did not stop cleanly: %s", service.name, exc)
        self._services.clear()
        if self.job_id is not None:
            try:
                with self.store.session() as session:
                    scheduling.end_job(session, self.job_id, "success", self.clock.now())
            except (SQLAlchemyError, StoreError) as exc:
                log.error("could not record the scheduler's end: %s", exc)
