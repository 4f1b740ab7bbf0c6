"""SLAs and deadlines: runs at risk now and why, misses in a window and how late, and
runs that should have started and did not.

Runs at risk are those the alerts' forecast warned about (`deadline_at_risk`) that are
still active; their predicted finish is computed again now by the same forecast code
(`alerts.forecast`), from the same task duration history, and the reason is either a
pool (or the executor) a task of the run waits for, or the critical path of its
unfinished tasks. Overdue runs come from `alerts.overdue`, the check that raises
`run_not_started`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import and_, select

from alerts import forecast, overdue
from console.advice import duration
from console.queries import problems
from console.queries.common import frame, seconds_between, utcnow
from engine.states import TASK_FINISHED, TaskState
from engine.store import pools as pool_store
from engine.store import scheduling
from engine.store.db import Store
from engine.store.models import Dag, DagRun, SlaMiss, TaskInstance
from engine.store.scheduling import pairs_in

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

WINDOWS: dict[str, timedelta] = {"24 h": timedelta(hours=24), "7 d": timedelta(days=7)}
AT_RISK_COLUMNS = (
    "dag_id",
    "run_id",
    "task_id",
    "deadline",
    "predicted_finish",
    "slack_s",
    "reason",
    "warned_at",
)
MISS_COLUMNS = (
    "kind",
    "dag_id",
    "run_id",
    "task_id",
    "deadline",
    "detected_at",
    "late_s",
    "still_late",
    "state",
)
OVERDUE_COLUMNS = (
    "dag_id",
    "run_id",
    "created",
    "should_have_started",
    "late_s",
    "reason",
    "detail",
)
_FINISHED = frozenset(state.value for state in TASK_FINISHED)


# -- runs at risk ----------------------------------------------------------------------


def _warnings(store: Store, now: datetime, limit: int) -> list[Any]:
    """The newest deadline_at_risk alert per (run, task) of runs still active (the alert is
    written once per route: the first, newest, is kept)."""
    rows = problems.runs_at_risk(store, now=now, limit=limit)
    rows = rows.assign(task_id=rows["task_id"].fillna(""))
    return list(rows.drop_duplicates(["dag_id", "run_id", "task_id"]).itertuples())


@dataclass(frozen=True)
class _Task:
    task_id: str
    upstream_task_ids: frozenset[str]


def task_order(serialized: Mapping[str, Any]) -> list[_Task]:
    """The serialized DAG's tasks, upstream first (all the forecast needs of its plan)."""
    pending = {
        task["task_id"]: _Task(task["task_id"], frozenset(task.get("upstream_task_ids") or ()))
        for task in serialized.get("tasks") or ()
    }
    order: list[_Task] = []
    done: set[str] = set()
    while pending:
        ready = [t for t in pending.values() if t.upstream_task_ids <= done]
        ready = ready or list(pending.values())  # a cycle cannot be parsed; never loop forever
        for task in sorted(ready, key=lambda t: t.task_id):
            order.append(pending.pop(task.task_id))
            done.add(task.task_id)
    return order


def critical_path(order: Sequence[Any], finish: Mapping[str, float]) -> list[str]:
    """The unfinished tasks the predicted finish waits on, from the one holding the run now
    to the last one (`finish`: seconds until each unfinished task ends)."""
    by_id = {task.task_id: task for task in order}
    if not finish:
        return []
    chain = [max(finish, key=lambda task_id: (finish[task_id], task_id))]
    while True:
        ups = [u for u in by_id[chain[-1]].upstream_task_ids if u in finish]
        if not ups:
            return list(reversed(chain))
        chain.append(max(ups, key=lambda task_id: (finish[task_id], task_id)))


def _pool_wait(
    waiting: Sequence[tuple[str, str, int]], pools: Mapping[str, Any], executor_full: bool
) -> str | None:
    """Why a scheduled task of the run is not queued: its pool, or the executor."""
    for task_id, pool, slots in waiting:
        info = pools.get(pool)
        if info is not None and info.open_slots < slots:
            return (
                f"waiting on pool `{pool}` ({info.occupied_slots} of {info.slots} slots in "
                f"use): {task_id}"
            )
    if waiting and executor_full:
        return f"waiting for an executor slot (core.parallelism reached): {waiting[0][0]}"
    return None


def _path_reason(
    chain: Sequence[str],
    tasks: Mapping[str, tuple[str, datetime | None]],
    expected: Mapping[str, float],
    now: datetime,
) -> str:
    if not chain:
        return "no unfinished task with a duration history"
    first = chain[0]
    state, started = tasks.get(first, (TaskState.NONE.value, None))
    ran = f", running for {duration(seconds_between(now, started))}" if started else ""
    rest = f", then {len(chain) - 1} more task(s) ({chain[-1]} last)" if len(chain) > 1 else ""
    usual = duration(expected.get(first))
    return f"critical path: {first} ({state}{ran}; usually takes {usual}){rest}"


def runs_at_risk(
    store: Store,
    *,
    history: int = 10,
    quantile: float = 0.9,
    parallelism: int = 32,
    now: datetime | None = None,
    limit: int = 200,
) -> pd.DataFrame:
    """Active runs the forecast warned about, their predicted finish now against their
    deadline, and the reason; the smallest slack first."""
    now = utcnow(now)
    warned = _warnings(store, now, limit)
    if not warned:
        return frame([], AT_RISK_COLUMNS)
    with store.session(readonly=True) as session:
        runs = sorted({(row.dag_id, row.run_id) for row in warned})
        dag_ids = sorted({dag_id for dag_id, _ in runs})
        serialized: dict[str, Any] = dict(
            session.execute(select(Dag.dag_id, Dag.serialized).where(Dag.dag_id.in_(dag_ids))).all()
        )
        states = forecast.task_states(session, runs)
        durations = forecast.TaskDurations(history, quantile)
        durations.expected(session, dag_ids, now)
        waiting = _scheduled(session, runs)
        pools = {info.name: info for info in pool_store.list_pools(session)}
        holding = scheduling.occupancy(session).total
    orders = {dag_id: task_order(data) for dag_id, data in serialized.items()}
    rows = []
    for row in warned:
        order = orders.get(row.dag_id)
        tasks = states.get((row.dag_id, row.run_id), {})
        expected = durations.of(row.dag_id)
        finish = forecast.remaining_path(order or [], tasks, expected, now)
        ahead = finish.get(row.task_id, 0.0) if row.task_id else max(finish.values(), default=0.0)
        predicted = now + timedelta(seconds=ahead)
        deadline = _time(row.payload.get("deadline"))
        reason = _pool_wait(
            waiting.get((row.dag_id, row.run_id), []), pools, holding >= parallelism
        ) or _path_reason(critical_path(order or [], finish), tasks, expected, now)
        slack = seconds_between(deadline, predicted)
        rows.append(
            (row.dag_id, row.run_id, row.task_id or None, deadline, predicted, slack, reason,
             row.warned_at)
        )  # fmt: skip
    rows.sort(key=lambda r: (r[5] is None, r[5] or 0.0))
    return frame(rows, AT_RISK_COLUMNS)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _scheduled(
    session: Session, runs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[tuple[str, str, int]]]:
    """(dag_id, run_id) -> [(task_id, pool, pool_slots)] of its task instances waiting for a
    slot (scheduled)."""
    found: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for start in range(0, len(runs), forecast.CHUNK):
        chunk = runs[start : start + forecast.CHUNK]
        rows = session.execute(
            select(
                TaskInstance.dag_id,
                TaskInstance.run_id,
                TaskInstance.task_id,
                TaskInstance.pool,
                TaskInstance.pool_slots,
            ).where(
                pairs_in(TaskInstance.dag_id, TaskInstance.run_id, chunk),
                TaskInstance.state == TaskState.SCHEDULED.value,
            )
        )
        for dag_id, run_id, task_id, pool, slots in rows:
            found.setdefault((dag_id, run_id), []).append((task_id, pool, slots))
    return found


# -- misses ----------------------------------------------------------------------------


def misses(
    store: Store, window: str = "24 h", *, now: datetime | None = None, limit: int = 200
) -> pd.DataFrame:
    """SLA misses, missed deadlines and runs that did not start, detected in the window,
    newest first, with how late: until the task (or run) ended or started, or until now
    (`still_late`)."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; one of {', '.join(WINDOWS)}")
    now = utcnow(now)
    with store.session(readonly=True) as session:
        found = session.execute(
            select(
                SlaMiss.kind,
                SlaMiss.dag_id,
                SlaMiss.run_id,
                SlaMiss.task_id,
                SlaMiss.deadline,
                SlaMiss.detected_at,
                SlaMiss.state,
                DagRun.start_date,
                DagRun.end_date,
            )
            .outerjoin(
                DagRun, and_(DagRun.dag_id == SlaMiss.dag_id, DagRun.run_id == SlaMiss.run_id)
            )
            .where(SlaMiss.detected_at >= now - WINDOWS[window])
            .order_by(SlaMiss.detected_at.desc(), SlaMiss.id.desc())
            .limit(limit)
        ).all()
        runs = {(m.dag_id, m.run_id) for m in found if m.kind == "task_sla"}
        ends = _task_ends(session, runs)
    rows = []
    for m in found:
        if m.kind == "task_sla":
            end = ends.get((m.dag_id, m.run_id, m.task_id))
        elif m.kind == overdue.KIND:
            end = m.start_date
        else:
            end = m.end_date
        late = seconds_between(end or now, m.deadline)
        rows.append(
            (m.kind, m.dag_id, m.run_id, m.task_id or None, m.deadline, m.detected_at, late,
             end is None, m.state)
        )  # fmt: skip
    return frame(rows, MISS_COLUMNS)


def _task_ends(
    session: Session, runs: set[tuple[str, str]]
) -> dict[tuple[str, str, str], datetime | None]:
    """When each task of these runs finished (its last map index); None: not yet."""
    ends: dict[tuple[str, str, str], datetime | None] = {}
    unfinished: set[tuple[str, str, str]] = set()
    for dag_id, run_id, task_id, state, _, end in forecast.task_instance_times(session, runs):
        key = (dag_id, run_id, task_id)
        if state not in _FINISHED or end is None:
            unfinished.add(key)
        elif ends.get(key) is None or end > ends[key]:  # type: ignore[operator]
            ends[key] = end
    for key in unfinished:
        ends[key] = None
    return ends


# -- runs that did not start -----------------------------------------------------------


def not_started(
    store: Store,
    *,
    grace: float,
    heartbeat_timeout: float,
    max_active_runs: int,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Runs that should have started more than `grace` seconds ago (alerts.run_start_grace)
    and have not, the latest first, with the reason (the check behind run_not_started)."""
    now = utcnow(now)
    with store.session(readonly=True) as session:
        found = overdue.find_overdue(
            session,
            now,
            grace=grace,
            heartbeat_timeout=heartbeat_timeout,
            default_max_active_runs=max_active_runs,
        )
    rows = [
        (o.dag_id, o.run_id, o.created, o.due, o.late_by(now), o.reason, o.detail)
        for o in reversed(found)
    ]
    return frame(rows, OVERDUE_COLUMNS)
