"""The audit log, newest first, a page at a time."""

from __future__ import annotations

import json

import pandas as pd
from sqlalchemy import select

from console.queries.common import frame
from engine.store.db import Store
from engine.store.models import AuditLog

COLUMNS = ("at", "actor", "event", "dag_id", "run_id", "task_id", "extra")


def audit_log(
    store: Store,
    *,
    dag_id: str | None = None,
    actor: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> pd.DataFrame:
    """One page of audit rows, optionally of one DAG or one actor."""
    query = select(*(getattr(AuditLog, c) for c in COLUMNS))
    if dag_id:
        query = query.where(AuditLog.dag_id == dag_id)
    if actor:
        query = query.where(AuditLog.actor == actor)
    query = query.order_by(AuditLog.id.desc()).limit(limit).offset(offset)
    with store.session(readonly=True) as session:
        rows = [
            (*row[:-1], json.dumps(row[-1] or {}, default=str)) for row in session.execute(query)
        ]
    return frame(rows, COLUMNS)
