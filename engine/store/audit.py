"""The audit log: who changed what, written in the same transaction as the change."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from engine.store.models import AuditLog


def record_audit(
    session: Session,
    *,
    actor: str,
    event: str,
    dag_id: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditLog:
    """Add one audit_log row (committed, or rolled back, with the caller's change)."""
    row = AuditLog(
        at=at or datetime.now(UTC),
        actor=actor,
        event=event,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        extra=dict(extra or {}),
    )
    session.add(row)
    return row
