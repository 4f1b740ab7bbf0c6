"""Runs that should have started and did not: `run_not_started`, so absence pages too.

A scheduled DAG's next run is overdue once its `next_dagrun_create_after` is more than
`alerts.run_start_grace` in the past and no run was created for it; a created run is
overdue once it has waited queued that long. Why, in this order: the DAG is paused, no
scheduler is heartbeating, the DAG's `max_active_runs` is reached (the runs in the way
are named), or the scheduler has not got to it yet.

The check runs in a thread of its own (`OverdueRuns`, a scheduler service, and a part of
`dagwatch alerts dispatch`), never in the scheduler's tick: every `CHECK_INTERVAL`
seconds, three indexed reads (the due DAGs, the long-queued runs, then the active runs
and the schedulers' heartbeats when something is overdue). Each overdue run is recorded
once as an `sla_miss` row of kind `run_not_started` (INSERT ... ON CONFLICT DO NOTHING,
keyed by DAG and run id) in the same transaction as its alert rows, so it is raised
once, whatever restarts or second checkers come. A DAG whose runs are being created
(one was queued within the grace: it is catching up) is not overdue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alerts import outbox
from alerts.events import Event
from alerts.routes import Route, compose, dag_details, load_routes, run_link
from engine import hooks
from engine.clock import SYSTEM, Clock
from engine.periodic import PeriodicService
from engine.states import DAG_RUN_ACTIVE, DagRunState
from engine.store.db import Store, upsert_insert
from engine.store.models import Dag, DagRun, Job, SlaMiss
from engine.store.scheduling import NEVER

if TYPE_CHECKING:
    from engine.config import Config

log = logging.getLogger(__name__)

#: the sla_miss kind of a run that did not start
KIND = "run_not_started"
#: seconds between two checks
CHECK_INTERVAL = 30.0
#: run types that are expected to start as soon as they are queued
CHECKED_RUN_TYPES = ("scheduled", "manual")
#: how many of the runs in the way are named
NAMED = 3

PAUSED = "paused"
NO_SCHEDULER = "no_scheduler"
MAX_ACTIVE_RUNS = "max_active_runs"
BEHIND = "scheduler_behind"


@dataclass(frozen=True)
class Overdue:
    """A run that should have started by `due` and has not."""

    dag_id: str
    run_id: str  #: the run's id, or the one the scheduler will give it
    logical_date: datetime
    due: datetime
    created: bool  #: the run exists (queued), or was never created
    reason: str  #: PAUSED | NO_SCHEDULER | MAX_ACTIVE_RUNS | BEHIND
    detail: str  #: the reason in words

    def late_by(self, now: datetime) -> float:
        return (now - self.due).total_seconds()

    def describe(self, now: datetime) -> str:
        what = "queued run" if self.created else "next run"
        return (
            f"{self.dag_id}: {what} {self.run_id} should have started by "
            f"{self.due.isoformat()} and has not ({self.late_by(now):.0f} s late): {self.detail}"
        )


@dataclass(frozen=True)
class _Context:
    """What the reasons need: paused DAGs, their limits, their active runs, the schedulers."""

    paused: Mapping[str, bool]
    max_active_runs: Mapping[str, int]
    active: Mapping[str, list[tuple[str, str]]]  #: dag_id -> [(run_id, state)], oldest first
    scheduler_age: float | None  #: seconds since the freshest scheduler heartbeat


def _reason(dag_id: str, ctx: _Context, heartbeat_timeout: float) -> tuple[str, str]:
    if ctx.paused.get(dag_id):
        return PAUSED, "the DAG is paused"
    if ctx.scheduler_age is None:
        return NO_SCHEDULER, "no scheduler is running"
    if ctx.scheduler_age > heartbeat_timeout:
        return NO_SCHEDULER, f"no scheduler heartbeat for {ctx.scheduler_age:.0f} s"
    runs = ctx.active.get(dag_id, [])
    running = [run_id for run_id, state in runs if state == DagRunState.RUNNING.value]
    limit = ctx.max_active_runs[dag_id]
    if len(running) >= limit:
        named = ", ".join(running[:NAMED]) + (" ..." if len(running) > NAMED else "")
        return MAX_ACTIVE_RUNS, f"max_active_runs {limit} reached by {named}"
    return BEHIND, "the scheduler is alive but has not started it (is its loop slow?)"


def find_overdue(
    session: Session,
    now: datetime,
    *,
    grace: float,
    heartbeat_timeout: float,
    default_max_active_runs: int,
) -> list[Overdue]:
    """Every run overdue at `now`, with its reason (nothing is written)."""
    cutoff = now - timedelta(seconds=grace)
    due_dags = session.execute(
        select(Dag.dag_id, Dag.next_dagrun, Dag.next_dagrun_create_after).where(
            Dag.is_active,
            Dag.next_dagrun.is_not(None),
            Dag.next_dagrun_create_after <= cutoff,
            Dag.next_dagrun_create_after < NEVER,
        )
    ).all()
    queued = session.execute(
        select(DagRun.dag_id, DagRun.run_id, DagRun.logical_date, DagRun.queued_at).where(
            DagRun.state == DagRunState.QUEUED.value,
            DagRun.queued_at <= cutoff,
            DagRun.run_type.in_(CHECKED_RUN_TYPES),
        )
    ).all()
    if not due_dags and not queued:
        return []
    dag_ids = {row.dag_id for row in due_dags} | {row.dag_id for row in queued}
    ctx = _context(session, now, dag_ids, default_max_active_runs)
    progressing = _recently_queued(session, {row.dag_id for row in due_dags}, cutoff)
    found = []
    for dag_id, logical, due in due_dags:
        if dag_id in progressing or logical is None or due is None:  # None: left out by SQL
            continue
        reason, detail = _reason(dag_id, ctx, heartbeat_timeout)
        run_id = f"scheduled__{logical.astimezone(UTC).isoformat()}"
        found.append(Overdue(dag_id, run_id, logical, due, False, reason, detail))
    for dag_id, run_id, logical, queued_at in queued:
        if queued_at is None:  # left out by SQL
            continue
        reason, detail = _reason(dag_id, ctx, heartbeat_timeout)
        found.append(Overdue(dag_id, run_id, logical, queued_at, True, reason, detail))
    return sorted(found, key=lambda o: (o.due, o.dag_id, o.run_id))


def _context(
    session: Session, now: datetime, dag_ids: set[str], default_max_active_runs: int
) -> _Context:
    ids = sorted(dag_ids)
    dags = session.execute(
        select(Dag.dag_id, Dag.is_paused, Dag.max_active_runs).where(Dag.dag_id.in_(ids))
    ).all()
    active: dict[str, list[tuple[str, str]]] = {}
    runs = session.execute(
        select(DagRun.dag_id, DagRun.run_id, DagRun.state)
        .where(DagRun.state.in_(sorted(DAG_RUN_ACTIVE)), DagRun.dag_id.in_(ids))
        .order_by(DagRun.logical_date)
    )
    for dag_id, run_id, state in runs:
        active.setdefault(dag_id, []).append((run_id, state))
    freshest = session.execute(
        select(func.max(Job.latest_heartbeat)).where(
            Job.job_type == "scheduler", Job.state == "running"
        )
    ).scalar_one()
    return _Context(
        paused={row.dag_id: bool(row.is_paused) for row in dags},
        max_active_runs={
            row.dag_id: row.max_active_runs or default_max_active_runs for row in dags
        },
        active=active,
        scheduler_age=None if freshest is None else (now - freshest).total_seconds(),
    )


def _recently_queued(session: Session, dag_ids: set[str], since: datetime) -> set[str]:
    """DAGs with a run queued since `since`: their runs are being created (catch-up)."""
    if not dag_ids:
        return set()
    rows = session.execute(
        select(DagRun.dag_id)
        .where(DagRun.dag_id.in_(sorted(dag_ids)), DagRun.queued_at > since)
        .distinct()
    )
    return {dag_id for (dag_id,) in rows}


def record(session: Session, overdue: Sequence[Overdue], now: datetime) -> list[Overdue]:
    """Insert the overdue runs not recorded yet; returns those really inserted."""
    if not overdue:
        return []
    rows = [
        {
            "kind": KIND,
            "dag_id": o.dag_id,
            "run_id": o.run_id,
            "task_id": "",
            "deadline": o.due,
            "detected_at": now,
            "notified": False,
            "state": o.reason,
        }
        for o in overdue
    ]
    statement = (
        upsert_insert(session, SlaMiss)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["kind", "dag_id", "run_id", "task_id"])
        .returning(SlaMiss.dag_id, SlaMiss.run_id)
    )
    inserted = {tuple(row) for row in session.execute(statement)}
    return [o for o in overdue if (o.dag_id, o.run_id) in inserted]


class OverdueCheck:
    """One pass: find, record and alert the runs that should have started."""

    def __init__(self, config: Config, routes: Mapping[str, Route] | None = None) -> None:
        self.config = config
        routes = load_routes(config) if routes is None else routes
        self.routes = {n: r for n, r in routes.items() if Event.RUN_NOT_STARTED in r.events}
        self.grace = float(config["alerts.run_start_grace"])

    def run(self, store: Store, now: datetime) -> list[Overdue]:
        """Record and alert what is newly overdue at `now`; returns it."""
        with store.session() as session:
            found = find_overdue(
                session,
                now,
                grace=self.grace,
                heartbeat_timeout=float(self.config["scheduler.heartbeat_timeout"]),
                default_max_active_runs=int(self.config["core.max_active_runs_per_dag"]),
            )
            new = record(session, found, now)
            if new and self.routes:
                outbox.enqueue(session, self._alerts(session, new, now), now)
        for o in new:
            log.warning("%s", o.describe(now), extra={"action": KIND})
        return new

    def _alerts(
        self, session: Session, new: Iterable[Overdue], now: datetime
    ) -> list[outbox.NewAlert]:
        new = list(new)
        needs = any(route.needs_dag_details for route in self.routes.values())
        details = dag_details(session, {o.dag_id for o in new}) if needs else {}
        rows: list[outbox.NewAlert] = []
        for o in new:
            payload = {
                "dag_id": o.dag_id,
                "run_id": o.run_id,
                "logical_date": o.logical_date.isoformat(),
                "deadline": o.due.isoformat(),
                "late_by": o.late_by(now),
                "created": o.created,
                "reason": o.reason,
                "state": o.reason,
                "at": now.isoformat(),
                "message": o.describe(now),
                "link": run_link(self.config, o.dag_id, o.run_id if o.created else None),
            }
            rows += compose(
                self.routes,
                Event.RUN_NOT_STARTED,
                payload=payload,
                dag_id=o.dag_id,
                run_id=o.run_id,
                details=details.get(o.dag_id, ((), None)),
            )
        return rows


class OverdueRuns(PeriodicService):
    """The check as a service thread: a pass every `interval` seconds until stopped.

    In a scheduler the first pass waits `first_wait` (one interval), so the scheduler's
    first ticks create what came due while it was away before anything is judged; `alerts
    dispatch`, which watches from outside, starts at once. `registry` ties the thread to
    the plugin installation that made it: once that is replaced (`engine.runtime.reset`),
    the thread stops by itself."""

    name = "run-not-started"
    thread_name = "dagwatch-run-not-started"

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        registry: hooks.Registry | None = None,
        clock: Clock = SYSTEM,
        interval: float = CHECK_INTERVAL,
        first_wait: float = CHECK_INTERVAL,
    ) -> None:
        super().__init__(interval=interval, first_wait=first_wait, registry=registry, clock=clock)
        self.check = OverdueCheck(config)
        self.store = store

    def run_pass(self) -> None:
        self.check.run(self.store, self.clock.now())
