"""The DAGs page: one page of DAGs, filtered in SQL, with their recent runs."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import Select, String, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from console.queries.common import frame, utcnow
from console.queries.overview import DAY
from engine.sdk.schedules import describe_schedule
from engine.states import TASK_FAILED
from engine.store.db import Store
from engine.store.models import Dag, DagRun, TaskInstance

#: the squares of the DAGs page: this many newest runs per DAG
LAST_RUNS = 10
COLUMNS = (
    "dag_id",
    "display_name",
    "schedule",
    "owner",
    "tags",
    "paused",
    "next_run",
    "last_runs",
    "last_state",
    "failures_24h",
)
#: the state filter: a run state (of the newest run), or paused/active
STATE_FILTERS = ("success", "failed", "running", "queued", "paused", "active")


@dataclass(frozen=True)
class DagPage:
    """One page of the DAG list and how many DAGs match in all."""

    rows: pd.DataFrame
    total: int


def list_dags(
    store: Store,
    *,
    search: str = "",
    tag: str | None = None,
    owner: str | None = None,
    state: str | None = None,
    limit: int = 50,
    offset: int = 0,
    now: datetime | None = None,
) -> DagPage:
    """Active DAGs matching the filters, by dag_id, one page of them."""
    query = select(
        Dag.dag_id,
        Dag.dag_display_name,
        Dag.schedule,
        Dag.owner,
        Dag.tags,
        Dag.is_paused,
        Dag.next_dagrun,
    ).where(Dag.is_active.is_(True))
    if search:  # the id or the display name
        pattern = f"%{search}%"
        query = query.where(or_(Dag.dag_id.ilike(pattern), Dag.dag_display_name.ilike(pattern)))
    if owner:
        query = query.where(Dag.owner == owner)
    if tag:  # tags are a JSON list: match the quoted tag in its text
        query = query.where(cast(Dag.tags, String).like(f'%"{tag}"%'))
    if state == "paused":
        query = query.where(Dag.is_paused.is_(True))
    elif state == "active":
        query = query.where(Dag.is_paused.is_(False))
    elif state:
        query = query.where(Dag.dag_id.in_(_newest_in_state(state)))
    with store.session(readonly=True) as session:
        total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        page = session.execute(query.order_by(Dag.dag_id).limit(limit).offset(offset)).all()
        dag_ids = [row.dag_id for row in page]
        recent = _recent_runs(session, dag_ids)
        failures = _failures(session, dag_ids, utcnow(now) - DAY)
    rows = []
    for row in page:
        states = recent.get(row.dag_id, [])
        rows.append(
            (
                row.dag_id,
                row.dag_display_name or "",
                describe_schedule(row.schedule),
                row.owner or "",
                ", ".join(row.tags or []),
                bool(row.is_paused),
                row.next_dagrun,
                list(reversed(states)),
                states[0] if states else "",
                failures.get(row.dag_id, 0),
            )
        )
    return DagPage(frame(rows, COLUMNS), int(total))


def _newest_in_state(state: str) -> Select[str]:
    """The DAGs whose newest run (by logical date) is in `state`: the newest date of each
    DAG comes from the (dag_id, logical_date) index, then one lookup per DAG."""
    newest = (
        select(DagRun.dag_id, func.max(DagRun.logical_date).label("newest"))
        .group_by(DagRun.dag_id)
        .subquery()
    )
    return (
        select(DagRun.dag_id)
        .join(
            newest,
            and_(DagRun.dag_id == newest.c.dag_id, DagRun.logical_date == newest.c.newest),
        )
        .where(DagRun.state == state)
    )


def _recent_runs(session: Session, dag_ids: list[str]) -> dict[str, list[str]]:
    """dag_id -> states of its newest LAST_RUNS runs, newest first (one query)."""
    if not dag_ids:
        return {}
    ranked = (
        select(
            DagRun.dag_id,
            DagRun.state,
            func.row_number()
            .over(partition_by=DagRun.dag_id, order_by=DagRun.logical_date.desc())
            .label("rn"),
        )
        .where(DagRun.dag_id.in_(dag_ids))
        .subquery()
    )
    query = (
        select(ranked.c.dag_id, ranked.c.state)
        .where(ranked.c.rn <= LAST_RUNS)
        .order_by(ranked.c.dag_id, ranked.c.rn)
    )
    found: dict[str, list[str]] = defaultdict(list)
    for dag_id, state in session.execute(query):
        found[dag_id].append(state)
    return found


def _failures(session: Session, dag_ids: list[str], since: datetime) -> dict[str, int]:
    if not dag_ids:
        return {}
    query = (
        select(TaskInstance.dag_id, func.count())
        .where(
            TaskInstance.dag_id.in_(dag_ids),
            TaskInstance.state.in_(sorted(TASK_FAILED)),
            TaskInstance.end_date >= since,
        )
        .group_by(TaskInstance.dag_id)
    )
    return {dag_id: int(n) for dag_id, n in session.execute(query)}


def filter_options(store: Store) -> dict[str, list[str]]:
    """The tags and owners the filters offer (from the active DAGs, a few hundred rows)."""
    with store.session(readonly=True) as session:
        rows = session.execute(
            select(Dag.owner, Dag.tags).where(Dag.is_active.is_(True)).limit(10_000)
        ).all()
    tags = sorted({tag for _owner, tags in rows for tag in (tags or [])})
    owners = sorted({owner for owner, _tags in rows if owner})
    return {"tags": tags, "owners": owners}
