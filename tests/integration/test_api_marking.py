"""engine.api.mark_run on a real metastore: tasks settled, run marked, audited, once."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from engine import api
from engine.exceptions import DagwatchError
from engine.store.models import AuditLog, DagRun, StateTransition, TaskInstance
from tests.console.seed import seed


def states(store, run_id: str) -> dict[str, str]:
    with store.session(readonly=True) as session:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
                TaskInstance.run_id == run_id
            )
        ).all()
    return {f"{t}[{m}]" if m >= 0 else t: s for t, m, s in rows}


def run_state(store, run_id: str) -> str:
    with store.session(readonly=True) as session:
        return session.execute(select(DagRun.state).where(DagRun.run_id == run_id)).scalar_one()


def test_mark_a_failed_run_success(store, config):
    seeded = seed(store, config)
    preview = api.mark_run(store, "pipeline", "r2_failed", "success", dry_run=True)
    assert sorted((ref.task_id, to) for ref, to in preview.changed) == [
        ("double", "success"),
        ("shape.transform", "success"),
    ]
    assert run_state(store, "r2_failed") == "failed"  # the dry run wrote nothing
    api.mark_run(store, "pipeline", "r2_failed", "success", actor="olga", now=seeded.now)
    assert run_state(store, "r2_failed") == "success"
    assert states(store, "r2_failed") == {
        "extract": "success",
        "shape.transform": "success",
        "double": "success",
    }
    with store.session(readonly=True) as session:
        audit = session.execute(select(AuditLog.event, AuditLog.actor, AuditLog.extra)).one()
        reasons = set(
            session.execute(
                select(StateTransition.reason).where(StateTransition.run_id == "r2_failed")
            ).scalars()
        )
    assert audit.event == "dags.mark_success" and audit.actor == "olga"
    assert audit.extra == {"from": "failed", "task_instances": 2}
    assert reasons == {"marked success by olga"}


def test_mark_a_running_run_failed_fails_the_running_and_skips_the_rest(store, config):
    seed(store, config)
    result = api.mark_run(store, "pipeline", "r3_running", "failed", actor="olga")
    assert not result.left_running
    assert run_state(store, "r3_running") == "failed"
    assert states(store, "r3_running") == {
        "extract": "success",
        "shape.transform": "failed",
        "double": "skipped",
    }


def test_marking_success_leaves_executing_tasks_to_finish(store, config):
    seed(store, config)
    result = api.mark_run(store, "pipeline", "r3_running", "success", dry_run=True)
    assert [ref.task_id for ref in result.left_running] == ["shape.transform"]


def test_only_success_or_failed(store, config):
    seed(store, config)
    with pytest.raises(DagwatchError, match="success or failed, not running"):
        api.mark_run(store, "pipeline", "r2_failed", "running")
