"""Task SLAs and DAG-run deadlines, checked on the clock by a tick hook.

A task with `sla=` must be finished within that time of its run's scheduled time (the
data interval's end, or the queued time of a manual run); a DAG with `deadline=` must
have its run finished by then (`engine.sdk.deadlines`). A task or run still unfinished when
its time passes is a miss at that moment, not when it finally ends; one that finished in
time is not a miss. Backfill runs are not checked.

One pass (`SlaChecker.check`, every second) is a few batched queries:
1. the queued and running runs (index on state); those of DAGs whose cached plan has an
   SLA or a deadline are candidates, with the runs that ended since the last pass (by
   primary key), so a miss a run ends with is not lost;
2. deadlines are computed in Python; task instances are read (one query) only for runs
   with a task deadline passed and not yet decided;
3. new misses go into sla_miss with INSERT ... ON CONFLICT DO NOTHING, and their alert
   rows into the outbox in the same transaction; only rows really inserted are counted
   in metrics and given to the DAG's sla_miss_callback.

Decided misses (recorded, or found in time) are remembered while their run is active, so
a task is looked at about once past its deadline. A restart or a re-parse forgets that
memory: the unique key of sla_miss and the alerts' fingerprints keep a miss from being
told twice. A miss of a run that already failed is folded into its failure alert by
default (`alerts.miss_after_failure = "fold"`): recorded, its alert row written as
suppressed, and the failure alert still pending gets `deadline_missed`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alerts import forecast, outbox
from alerts import store as alert_store
from alerts.events import Event, fingerprint
from alerts.routes import Route, compose, dag_details, run_link, wanted_events
from engine.execution.base import CallbackRequest
from engine.hooks import TickContext
from engine.sdk.deadlines import CHECKED_RUN_TYPES, Deadline, scheduled_time
from engine.states import DAG_RUN_ACTIVE, TASK_FINISHED, DagRunState
from engine.store.db import upsert_insert
from engine.store.models import DagRun, SlaMiss
from metrics import stats

if TYPE_CHECKING:
    from engine.config import Config

log = logging.getLogger(__name__)

TASK_SLA = "task_sla"
DAG_DEADLINE = "dag_deadline"
FOLD_REASON = "run already failed; told in its failure alert"
#: Seconds (of the tick's clock) between two reads of recent run durations.
HISTORY_REFRESH = 60.0
#: Ids or runs per statement.
CHUNK = 200
#: sla_miss rows per INSERT (8 parameters each: far below both databases' limits).
INSERT_CHUNK = 1000

#: (kind, dag_id, run_id, task_id): the unique key of an sla_miss row ('' task for a run)
MissKey = tuple[str, str, str, str]

_RUN_COLUMNS = (
    DagRun.id,
    DagRun.dag_id,
    DagRun.run_id,
    DagRun.run_type,
    DagRun.state,
    DagRun.logical_date,
    DagRun.data_interval_end,
    DagRun.queued_at,
    DagRun.start_date,
    DagRun.end_date,
)
_ACTIVE = [state.value for state in DAG_RUN_ACTIVE]
#: built once (every tick runs it): a statement is immutable and keeps its cache key
_ACTIVE_RUNS = select(*_RUN_COLUMNS).where(DagRun.state.in_(_ACTIVE))
_FINISHED = frozenset(state.value for state in TASK_FINISHED)


@dataclass(frozen=True)
class RunRow:
    """The columns of a DAG run the checks read."""

    id: int
    dag_id: str
    run_id: str
    run_type: str
    state: str
    logical_date: datetime
    data_interval_end: datetime | None
    queued_at: datetime | None
    start_date: datetime | None
    end_date: datetime | None

    @property
    def active(self) -> bool:
        return self.state in _ACTIVE


@dataclass(frozen=True)
class Spec:
    """What the checks need of one DAG's plan, derived once per plan object."""

    plan: Any  # engine.parsing.serialization.SerializedDAG
    deadline: Deadline | None
    slas: tuple[tuple[str, timedelta], ...]

    @property
    def checked(self) -> bool:
        return self.deadline is not None or bool(self.slas)


@dataclass(frozen=True)
class Miss:
    """A task SLA or run deadline that passed before the task or run finished."""

    kind: str
    run: RunRow
    task_id: str  # '' for a run deadline
    deadline: datetime
    state: str  # the task's (task_sla) or run's (dag_deadline) state when detected

    @property
    def key(self) -> MissKey:
        return (self.kind, self.run.dag_id, self.run.run_id, self.task_id)

    def describe(self) -> str:
        what = f"task {self.task_id}" if self.kind == TASK_SLA else "the run"
        return f"{what} missed its {_WORD[self.kind]} {self.deadline.isoformat()} ({self.state})"


_WORD = {TASK_SLA: "SLA", DAG_DEADLINE: "deadline"}


@dataclass(frozen=True)
class Target:
    """An active run and its deadlines, handed to the forecast."""

    run: RunRow
    spec: Spec
    deadline: datetime | None
    task_deadlines: Mapping[str, datetime]


# -- the verdicts: pure functions of a run, its deadline and the clock -----------------


def run_verdict(run: RunRow, deadline: datetime, now: datetime) -> bool | None:
    """True: the run missed `deadline`; False: it finished in time; None: not yet known."""
    if run.active:
        return True if now >= deadline else None
    return (run.end_date or now) > deadline


def task_verdict(rows: Sequence[tuple[str, datetime | None]], deadline: datetime) -> str | None:
    """The state of a late task instance ((state, end_date) per map index), or None if every
    one finished by `deadline`."""
    late: list[str | None] = [
        state for state, end in rows if state not in _FINISHED or (end and end > deadline)
    ]
    unfinished: list[str | None] = [state for state in late if state not in _FINISHED]
    return (unfinished or late or [None])[0]


def due_tasks(
    run: RunRow, spec: Spec, now: datetime, decided: set[MissKey]
) -> tuple[dict[str, datetime], list[str]]:
    """({task: deadline} whose deadline passed while the run was unfinished, tasks that
    cannot have missed: the run ended before their deadline)."""
    base = scheduled_time(run)
    due: dict[str, datetime] = {}
    in_time: list[str] = []
    horizon = now if run.active else (run.end_date or now)
    for task_id, sla in spec.slas:
        if (TASK_SLA, run.dag_id, run.run_id, task_id) in decided:
            continue
        at = base + sla
        if at <= horizon:
            due[task_id] = at
        elif not run.active:
            in_time.append(task_id)
    return due, in_time


# -- store reads ---------------------------------------------------------------------


def _run_rows(rows: Iterable[Any]) -> list[RunRow]:
    return [RunRow(*row) for row in rows]


def active_runs(session: Session) -> list[RunRow]:
    """Queued and running runs (ix_dag_run_state_dag_id)."""
    return _run_rows(session.execute(_ACTIVE_RUNS))


def runs_by_id(session: Session, ids: Iterable[int]) -> list[RunRow]:
    pks = sorted(set(ids))
    found: list[RunRow] = []
    for start in range(0, len(pks), CHUNK):
        chunk = pks[start : start + CHUNK]
        found += _run_rows(session.execute(select(*_RUN_COLUMNS).where(DagRun.id.in_(chunk))))
    return found


def task_rows(
    session: Session, runs: Iterable[tuple[str, str]], task_ids: Iterable[str]
) -> dict[tuple[str, str, str], list[tuple[str, datetime | None]]]:
    """(dag_id, run_id, task_id) -> [(state, end_date)] per map index, for these tasks.

    The tasks are picked here rather than in SQL: with a long task_id list SQLite's planner
    drops the (dag_id, run_id, ...) index for a scan of the table.
    """
    wanted = set(task_ids)
    found: dict[tuple[str, str, str], list[tuple[str, datetime | None]]] = {}
    for dag_id, run_id, task_id, state, _, end in forecast.task_instance_times(session, runs):
        if task_id in wanted:
            found.setdefault((dag_id, run_id, task_id), []).append((state, end))
    return found


def recent_durations(session: Session, limits: Mapping[str, int]) -> dict[str, list[float]]:
    """dag_id -> seconds from start to end of its last successful runs, newest first."""
    if not limits:
        return {}
    rank = (
        func.row_number()
        .over(partition_by=DagRun.dag_id, order_by=(DagRun.logical_date.desc(), DagRun.id.desc()))
        .label("rank")
    )
    ranked = (
        select(DagRun.dag_id, DagRun.start_date, DagRun.end_date, rank)
        .where(
            DagRun.state == DagRunState.SUCCESS.value,
            DagRun.dag_id.in_(sorted(limits)),
            DagRun.start_date.is_not(None),
            DagRun.end_date.is_not(None),
        )
        .subquery()
    )
    statement = (
        select(ranked.c.dag_id, ranked.c.start_date, ranked.c.end_date)
        .where(ranked.c.rank <= max(limits.values()))
        .order_by(ranked.c.dag_id, ranked.c.rank)
    )
    found: dict[str, list[float]] = {dag_id: [] for dag_id in limits}
    for dag_id, start, end in session.execute(statement):
        if len(found[dag_id]) < limits[dag_id]:
            found[dag_id].append((end - start).total_seconds())
    return found


def list_misses(session: Session, *, dag_id: str | None = None, limit: int = 100) -> list[SlaMiss]:
    """Recorded misses, newest first (`dagwatch sla list`, the console)."""
    statement = select(SlaMiss).order_by(SlaMiss.detected_at.desc(), SlaMiss.id.desc())
    if dag_id:
        statement = statement.where(SlaMiss.dag_id == dag_id)
    return list(session.scalars(statement.limit(limit)))


# -- store writes --------------------------------------------------------------------


def record_misses(
    session: Session, misses: Sequence[Miss], now: datetime, notified: set[MissKey]
) -> set[MissKey]:
    """Insert the misses not recorded yet; returns the keys of the rows really inserted."""
    rows = [
        {
            "kind": miss.kind,
            "dag_id": miss.run.dag_id,
            "run_id": miss.run.run_id,
            "task_id": miss.task_id,
            "deadline": miss.deadline,
            "detected_at": now,
            "notified": miss.key in notified,
            "state": miss.state,
        }
        for miss in misses
    ]
    inserted: set[MissKey] = set()
    for start in range(0, len(rows), INSERT_CHUNK):
        statement = (
            upsert_insert(session, SlaMiss)
            .values(rows[start : start + INSERT_CHUNK])
            .on_conflict_do_nothing(index_elements=["kind", "dag_id", "run_id", "task_id"])
            .returning(SlaMiss.kind, SlaMiss.dag_id, SlaMiss.run_id, SlaMiss.task_id)
        )
        inserted.update(tuple(row) for row in session.execute(statement))
    return inserted


def fold_into_failure_alerts(
    session: Session, routes: Mapping[str, Route], misses: Sequence[Miss]
) -> int:
    """Add the misses to the still pending dag_run_failed alerts of their (failed) runs.

    The failure alert may have been written before the miss was recorded (the run failed
    in this very tick, after the scheduler was down), so it could not say so itself.
    """
    by_run: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for miss in misses:
        by_run.setdefault((miss.run.dag_id, miss.run.run_id), []).append(
            {"kind": miss.kind, "task_id": miss.task_id or None, "deadline": _iso(miss.deadline)}
        )
    names = [name for name, route in routes.items() if Event.DAG_RUN_FAILED in route.events]
    prints = {  # the failure alert's fingerprint per route: a lookup on the unique index
        fingerprint(Event.DAG_RUN_FAILED.value, name, dag_id=run[0], run_id=run[1]): run
        for run in by_run
        for name in names
    }
    if not prints:
        return 0
    folded = 0
    for alert in alert_store.pending_by_fingerprint(session, sorted(prints)):
        told = list(alert.payload.get("misses") or [])
        payload = {
            **alert.payload,
            "deadline_missed": True,
            "misses": told + by_run[prints[alert.fingerprint]],
        }
        alert_store.set_alert(session, alert.id, payload=payload)
        folded += 1
    return folded


def _summary(misses: Sequence[Miss], most: int = 10) -> str:
    """The misses of one run in a line (the callback's reason, the log)."""
    text = "; ".join(miss.describe() for miss in misses[:most])
    return text + (f"; and {len(misses) - most} more" if len(misses) > most else "")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- metrics -------------------------------------------------------------------------


def _by_run(misses: Sequence[Miss]) -> dict[tuple[str, str], list[Miss]]:
    by_run: dict[tuple[str, str], list[Miss]] = {}
    for miss in misses:
        by_run.setdefault((miss.run.dag_id, miss.run.run_id), []).append(miss)
    return by_run


def emit_missed(miss: Miss) -> None:
    """One recorded miss: sla_missed (task SLA) or deadline.missed (run deadline)."""
    if miss.kind == TASK_SLA:
        stats.incr("sla_missed", tags={"dag_id": miss.run.dag_id, "task_id": miss.task_id})
    else:
        stats.incr("deadline.missed", tags={"dag_id": miss.run.dag_id})


# -- the tick hook -------------------------------------------------------------------


class SlaChecker:
    """The `sla` tick hook: records, counts and tells each SLA or deadline miss once."""

    def __init__(self, routes: Mapping[str, Route], config: Config) -> None:
        self.routes = dict(routes)
        self.config = config
        self.fold = config["alerts.miss_after_failure"] == "fold"
        self.wanted = Event.SLA_MISSED in wanted_events(self.routes)
        self.needs_details = any(
            route.needs_dag_details and Event.SLA_MISSED in route.events
            for route in self.routes.values()
        )
        self.forecaster = forecast.Forecaster(self.routes, config)
        self._specs: dict[str, Spec] = {}
        self._decided: set[MissKey] = set()
        self._tracked: set[int] = set()  # checked runs seen active on the last pass
        self._durations: dict[str, list[float]] = {}
        self._durations_at: datetime | None = None

    def check(self, ctx: TickContext) -> None:
        decided, tracked = set(self._decided), set(self._tracked)
        try:
            with ctx.store.session() as session:
                active, ended = self._candidates(session, ctx)
                runs = active + ended
                deadlines = self._deadlines(session, runs, ctx.now) if runs else {}
                misses = self._misses(session, runs, deadlines, ctx.now) if runs else []
                new = self._record(session, misses, ctx.now) if misses else []
                requests = self._callback_requests(new)
                if requests and ctx.request_callbacks is not None:
                    # with the misses: a scheduler dying after this commit leaves them
                    # to the next one, which runs them
                    ctx.request_callbacks(session, requests, ctx.now)
                    requests = []
        except Exception:  # nothing was recorded: look at the same runs again next pass
            self._decided, self._tracked = decided, tracked
            raise
        self._told(new)
        if requests and ctx.executor is not None:
            ctx.executor.queue_callbacks(requests)
        live = {(run.dag_id, run.run_id) for run, _ in active}
        self._decided = {key for key in self._decided if (key[1], key[2]) in live}
        self.forecaster.check(ctx, self._targets(active, deadlines))

    # -- candidates and deadlines ------------------------------------------------------

    def _spec(self, ctx: TickContext, dag_id: str) -> Spec | None:
        plan = ctx.plan_of(dag_id)
        if plan is None:
            return None
        spec = self._specs.get(dag_id)
        if spec is None or spec.plan is not plan:
            slas = tuple((task.task_id, task.sla) for task in plan.tasks if task.sla)
            spec = Spec(plan, getattr(plan, "deadline", None), slas)
            self._specs[dag_id] = spec
        return spec if spec.checked else None

    def _candidates(
        self, session: Session, ctx: TickContext
    ) -> tuple[list[tuple[RunRow, Spec]], list[tuple[RunRow, Spec]]]:
        """Active runs with something to check, and such runs that ended since last pass."""
        active = self._with_specs(ctx, active_runs(session))
        now_active = {run.id for run, _ in active}
        finished = getattr(ctx.report, "finished", None) or []
        gone = (self._tracked | {run.id for run, _ in finished}) - now_active
        ended = self._with_specs(ctx, runs_by_id(session, gone)) if gone else []
        self._tracked = now_active
        return active, [(run, spec) for run, spec in ended if not run.active]

    def _with_specs(self, ctx: TickContext, runs: Iterable[RunRow]) -> list[tuple[RunRow, Spec]]:
        found = []
        for run in runs:
            spec = self._spec(ctx, run.dag_id) if run.run_type in CHECKED_RUN_TYPES else None
            if spec is not None:
                found.append((run, spec))
        return found

    def _deadlines(
        self, session: Session, runs: Sequence[tuple[RunRow, Spec]], now: datetime
    ) -> dict[int, datetime]:
        learned = {
            run.dag_id: spec.deadline.learned.n
            for run, spec in runs
            if spec.deadline is not None and spec.deadline.learned is not None
        }
        stale = self._durations_at is None or now - self._durations_at >= timedelta(
            seconds=HISTORY_REFRESH
        )
        if learned and (stale or not set(learned) <= set(self._durations)):
            self._durations = recent_durations(session, learned)
            self._durations_at = now
        found: dict[int, datetime] = {}
        for run, spec in runs:
            if spec.deadline is None:
                continue
            at = spec.deadline.deadline_for(
                run, spec.plan.timezone, self._durations.get(run.dag_id)
            )
            if at is not None:
                found[run.id] = at
        return found

    # -- misses ------------------------------------------------------------------------

    def _misses(
        self,
        session: Session,
        runs: Sequence[tuple[RunRow, Spec]],
        deadlines: Mapping[int, datetime],
        now: datetime,
    ) -> list[Miss]:
        misses: list[Miss] = []
        due: dict[tuple[str, str], tuple[RunRow, dict[str, datetime]]] = {}
        for run, spec in runs:
            at = deadlines.get(run.id)
            key = (DAG_DEADLINE, run.dag_id, run.run_id, "")
            if at is not None and key not in self._decided:
                verdict = run_verdict(run, at, now)
                if verdict is not None:
                    self._decided.add(key)
                if verdict:
                    misses.append(Miss(DAG_DEADLINE, run, "", at, run.state))
            tasks, in_time = due_tasks(run, spec, now, self._decided)
            self._decided.update((TASK_SLA, run.dag_id, run.run_id, t) for t in in_time)
            if tasks:
                due[(run.dag_id, run.run_id)] = (run, tasks)
        if due:
            misses += self._task_misses(session, due)
        return misses

    def _task_misses(
        self, session: Session, due: Mapping[tuple[str, str], tuple[RunRow, dict[str, datetime]]]
    ) -> list[Miss]:
        task_ids = {task_id for _, tasks in due.values() for task_id in tasks}
        rows = task_rows(session, due, task_ids)
        misses: list[Miss] = []
        for (dag_id, run_id), (run, tasks) in due.items():
            for task_id, at in tasks.items():
                self._decided.add((TASK_SLA, dag_id, run_id, task_id))
                state = task_verdict(rows.get((dag_id, run_id, task_id), []), at)
                if state is not None:
                    misses.append(Miss(TASK_SLA, run, task_id, at, state))
        return misses

    def _folded(self, miss: Miss) -> bool:
        return self.fold and miss.run.state == DagRunState.FAILED.value

    def _record(self, session: Session, misses: list[Miss], now: datetime) -> list[Miss]:
        """Insert the misses; alert rows for the new ones, in the same transaction."""
        alerts = self._alerts(session, misses, now)
        paged = {(a.dag_id, a.run_id, a.task_id or "") for a in alerts if not a.suppressed_reason}
        notified = {
            miss.key
            for miss in misses
            if (miss.run.dag_id, miss.run.run_id, miss.task_id) in paged
            or self._specs[miss.run.dag_id].plan.has_sla_miss_callback
        }
        inserted = record_misses(session, misses, now, notified)
        new = [miss for miss in misses if miss.key in inserted]
        new_keys = {(m.run.dag_id, m.run.run_id, m.task_id) for m in new}
        outbox.enqueue(
            session, [a for a in alerts if (a.dag_id, a.run_id, a.task_id or "") in new_keys], now
        )
        folded = [miss for miss in new if self._folded(miss)]
        if folded:
            fold_into_failure_alerts(session, self.routes, folded)
        return new

    def _alerts(self, session: Session, misses: Sequence[Miss], now: datetime) -> list[Any]:
        if not self.wanted:
            return []
        details = dag_details(session, {m.run.dag_id for m in misses}) if self.needs_details else {}
        rows = []
        for miss in misses:
            rows += compose(
                self.routes,
                Event.SLA_MISSED,
                payload=self._payload(miss, now),
                dag_id=miss.run.dag_id,
                run_id=miss.run.run_id,
                task_id=miss.task_id or None,
                details=details.get(miss.run.dag_id, ((), None)),
                extra=miss.kind,
                suppressed_reason=FOLD_REASON if self._folded(miss) else None,
            )
        return rows

    def _payload(self, miss: Miss, now: datetime) -> dict[str, Any]:
        spec = self._specs[miss.run.dag_id]
        if miss.kind == TASK_SLA:
            rule = f"sla {dict(spec.slas)[miss.task_id]} after the scheduled time"
        else:
            rule = spec.deadline.describe() if spec.deadline else ""
        return {
            "kind": miss.kind,
            "dag_id": miss.run.dag_id,
            "run_id": miss.run.run_id,
            "task_id": miss.task_id or None,
            "state": miss.state,
            "run_state": miss.run.state,
            "deadline": _iso(miss.deadline),
            "rule": rule,
            "at": _iso(now),
            "late_by": (now - miss.deadline).total_seconds(),
            "message": f"{miss.run.dag_id} {miss.run.run_id}: {miss.describe()}",
            "link": run_link(self.config, miss.run.dag_id, miss.run.run_id),
        }

    def _told(self, new: Sequence[Miss]) -> None:
        """After the commit: metrics and logs."""
        for (dag_id, run_id), misses in _by_run(new).items():
            for miss in misses:
                emit_missed(miss)
            reason = _summary(misses)
            log.warning("%s %s: %s", dag_id, run_id, reason, extra={"action": "sla_missed"})

    def _callback_requests(self, new: Sequence[Miss]) -> list[CallbackRequest]:
        """The DAG's sla_miss_callback, once per run with new misses."""
        requests = []
        for (dag_id, run_id), misses in _by_run(new).items():
            plan = self._specs[dag_id].plan
            if plan.has_sla_miss_callback:
                reason = _summary(misses)
                requests.append(
                    CallbackRequest(dag_id, run_id, plan.fileloc, "sla_miss_callback", None, reason)
                )
        return requests

    def _targets(
        self, active: Sequence[tuple[RunRow, Spec]], deadlines: Mapping[int, datetime]
    ) -> list[Target]:
        targets = []
        for run, spec in active:
            base = scheduled_time(run)
            tasks = {task_id: base + sla for task_id, sla in spec.slas}
            targets.append(Target(run, spec, deadlines.get(run.id), tasks))
        return targets
