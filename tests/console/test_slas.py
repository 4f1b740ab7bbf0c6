"""The SLAs page's queries (SQLite and PostgreSQL) and the page through AppTest, on a
metastore whose answers are known (tests/console/slas_seed.py)."""

from __future__ import annotations

import pytest

from console.queries import slas
from tests.console import slas_seed


@pytest.fixture
def seeded(store, config):
    """Replaces the console's seed for these tests (the console_app fixture reads it)."""
    return slas_seed.seed(store, config)


def test_runs_at_risk_with_their_predicted_finish_and_reason(seeded):
    now = seeded.now
    rows = slas.runs_at_risk(seeded.store, parallelism=32, now=now)
    assert list(rows.run_id) == ["late_2", "late_1"]  # the smallest slack first
    late_2, late_1 = rows.to_dict("records")
    assert late_1["predicted_finish"] == now + slas_seed.MINUTE * 40
    assert late_1["deadline"] == now + slas_seed.MINUTE * 15
    assert late_1["slack_s"] == -1500.0
    assert late_1["reason"] == (
        "critical path: transform (running, running for 10 min; usually takes 30 min), "
        "then 1 more task(s) (load last)"
    )
    assert late_2["predicted_finish"] == now + slas_seed.MINUTE * 55
    assert late_2["slack_s"] == -2100.0
    assert late_2["reason"] == "waiting on pool `db` (1 of 1 slots in use): extract"


def test_a_run_that_ended_is_no_longer_at_risk(seeded):
    from sqlalchemy import update

    from engine.store.models import DagRun

    with seeded.store.session() as session:
        session.execute(update(DagRun).where(DagRun.run_id == "late_2").values(state="success"))
    assert list(slas.runs_at_risk(seeded.store, now=seeded.now).run_id) == ["late_1"]


def test_misses_in_a_window_with_how_late(seeded):
    rows = slas.misses(seeded.store, "24 h", now=seeded.now)
    assert [(r.kind, r.run_id, r.late_s, r.still_late) for r in rows.itertuples()] == [
        ("task_sla", "late_1", 300.0, True),
        ("run_not_started", "slow_start", 900.0, False),
        ("dag_deadline", "done_run", 600.0, False),
    ]
    assert len(slas.misses(seeded.store, "7 d", now=seeded.now)) == 4


def test_runs_that_should_have_started(seeded):
    rows = slas.not_started(
        seeded.store, grace=300.0, heartbeat_timeout=30.0, max_active_runs=16, now=seeded.now
    )
    assert [(r.dag_id, r.created, r.late_s, r.reason, r.detail) for r in rows.itertuples()] == [
        ("paused_dag", False, 3600.0, "paused", "the DAG is paused")
    ]


def test_the_page_shows_each_answer(console_app):
    app = console_app("slas")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    shown = {metric.label: metric.value for metric in app.metric}
    assert shown == {"runs at risk": "2", "runs not started": "1", "misses (24 h)": "3"}
    at_risk, not_started, misses = (frame.value for frame in app.dataframe)
    assert list(at_risk.run_id) == ["late_2", "late_1"]
    assert at_risk.reason.iloc[0] == "waiting on pool `db` (1 of 1 slots in use): extract"
    assert at_risk.slack_s.iloc[1] == -1500.0
    assert list(not_started.dag_id) == ["paused_dag"]
    assert list(misses.late_s)[1:] == [900.0, 600.0]
    app.radio[0].set_value("7 d").run()
    assert {m.label: m.value for m in app.metric}["misses (7 d)"] == "4"
