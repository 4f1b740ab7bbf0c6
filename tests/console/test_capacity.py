"""The capacity figures and the tuning advice, on three seeded histories whose answers are
known (SQLite and PostgreSQL), and the step-function arithmetic they rest on."""

from __future__ import annotations

import numpy as np
import pytest

from console.advice import EXECUTOR, LimitFigures, advise, duration, headroom
from console.queries import capacity
from tests.console import capacity_seed as hist


def figures_of(report: capacity.Capacity) -> dict[str, LimitFigures]:
    return {f.name: f for f in report.figures}


def run(store, history, parallelism: int = 32) -> capacity.Capacity:
    sizes, tries = history
    hist.write(store, sizes, tries)
    return capacity.report(store, "1 h", parallelism, now=hist.END)


def test_levels_per_second_of_clipped_intervals():
    used = capacity.level(
        np.array([-10.0, 5.0, 5.0]), np.array([20.0, 15.0, 40.0]), np.array([1.0, 2.0, 1.0]), 30
    )
    assert list(used) == [1.0] * 5 + [4.0] * 10 + [2.0] * 5 + [1.0] * 10
    full = used >= 2
    assert full.mean() == 15 / 30
    # seconds full inside [0, 10) and [12, 30)
    assert list(capacity.seconds_in(full, np.array([0.0, 12.0]), np.array([10.0, 30.0]))) == [
        5.0,
        8.0,
    ]
    at, top = capacity.peaks(used, 3)
    assert (list(at), list(top)) == ([0, 10, 20], [4.0, 4.0, 1.0])


def test_a_pool_full_half_the_hour(store):
    report = run(store, hist.POOL_FULL)
    db = figures_of(report)["db"]
    assert db.size == 2
    assert db.full_share == 0.5
    assert (db.peak_used, db.peak_demand) == (2.0, 3.0)
    # waits of 0, 0 and 1200 s: p95 is 90% of the way from the second to the third
    assert (db.wait_p50, db.wait_p95) == (0.0, 1080.0)
    assert (db.waited, db.waited_on_it) == (1200.0, 1200.0)
    assert db.tries == 3  # the try that ended before the window is not read
    executor = figures_of(report)[EXECUTOR]
    assert (executor.full_share, executor.waited, executor.waited_on_it) == (0.0, 1200.0, 0.0)
    assert [(a.level, a.text) for a in report.advice] == [
        (
            "change",
            "pool `db` was full 50% of the last 1 h and its tasks waited 18 min at p95: "
            "raise slots 2 → 4 (peak demand 3)",
        )
    ]
    longest = report.longest
    assert list(longest.task_id) == ["load_3"]
    assert list(longest.waited_s) == [1200.0]
    chart = report.chart[(report.chart["limit"] == "db") & (report.chart["series"] == "used")]
    assert len(chart) == capacity.BUCKETS
    half = capacity.BUCKETS // 2
    assert set(chart.slots.iloc[:half]) == {2.0}  # full for the first half
    assert set(chart.slots.iloc[half:]) == {1.0, 0.0}


def test_a_known_p95_delay_and_a_pool_that_limits_nothing(store):
    report = run(store, hist.DELAYS)
    api = figures_of(report)["api"]
    assert api.wait_p50 == pytest.approx(105.0)
    assert api.wait_p95 == pytest.approx(190.5)
    assert (api.full_share, api.peak_used, api.tries) == (0.0, 1.0, 20)
    assert api.waited == pytest.approx(sum(10 * i for i in range(1, 21)))
    assert api.waited_on_it == 0.0
    texts = [(a.level, a.text) for a in report.advice]
    assert texts == [
        ("ok", "no limit was binding in the last 1 h: nothing to change (busiest: pool `api`,"
               " peak 1 of 16)"),
        ("info", "tasks waited 35 min (task-time) in the last 1 h while neither their pool nor"
                 " the executor was full: a DAG's max_active_tasks, a task's"
                 " max_active_tis_per_dag or a slow scheduler loop held them"),
        ("info", "pool `api` never used more than 1 of 16 slots in the last 1 h: it limits"
                 " nothing (slots 16 → 2 would still leave room for twice the peak)"),
    ]  # fmt: skip


def test_parallelism_binding_not_the_pools(store):
    report = run(store, hist.PARALLELISM, parallelism=4)
    by_name = figures_of(report)
    executor = by_name[EXECUTOR]
    assert executor.full_share == 1.0
    assert (executor.peak_used, executor.peak_demand) == (4.0, 8.0)
    assert executor.waited == executor.waited_on_it == 4 * 1800.0
    for name in ("a", "b"):
        assert by_name[name].full_share == 0.0
        assert by_name[name].waited_on_it == 0.0
        assert by_name[name].waited == 2 * 1800.0
    assert [(a.level, a.limit, a.text) for a in report.advice] == [
        (
            "change",
            EXECUTOR,
            "parallelism 4 is the binding limit, not the pools: the executor was full 100% of "
            "the last 1 h and tasks waited 2.0 h (task-time) for an executor slot while their "
            "pools had room (against 0 s on full pools); raise core.parallelism 4 → 9 (peak "
            "demand 8), if the workers can take it",
        )
    ]
    # those still waiting are the longest waits, marked as such
    assert set(report.longest.task_id) == {"a_wait_1", "a_wait_2", "b_wait_1", "b_wait_2"}
    assert report.longest.still_waiting.all()


def test_slots_now_per_pool_and_for_the_executor(store):
    hist.write(store, *hist.PARALLELISM)
    now = capacity.now_slots(store, 4).set_index("limit")
    assert now.loc[EXECUTOR].tolist() == [4, 4, 0, 4, 0]
    assert now.loc["a"].tolist() == [8, 2, 0, 2, 6]


def test_the_window_is_read_in_one_indexed_statement(store, monkeypatch):
    hist.write(store, *hist.POOL_FULL)
    executed = []
    real = store.session

    def session(*args, **kwargs):  # record what the driver's cursor is given
        context = real(*args, **kwargs)
        opened = context.__enter__()
        connection = opened.connection().connection

        class Cursor:
            def __init__(self, inner):
                self.inner = inner

            def execute(self, sql, *rest):
                executed.append(sql)
                return self.inner.execute(sql, *rest)

            def __getattr__(self, name):
                return getattr(self.inner, name)

        monkeypatch.setattr(
            connection, "cursor", lambda: Cursor(connection.dbapi_connection.cursor())
        )
        return _Wrapped(context, opened)

    monkeypatch.setattr(store, "session", session)
    rows = capacity.intervals(store, hist.START, hist.END)
    assert len(rows) == 3
    assert len(executed) == 1
    plan = _plan(store, executed[0])
    assert "ix_task_try_end_date" in plan, plan


class _Wrapped:
    def __init__(self, context, opened):
        self.context, self.opened = context, opened

    def __enter__(self):
        return self.opened

    def __exit__(self, *exc):
        return self.context.__exit__(*exc)


def _plan(store, statement: str) -> str:
    """The database's plan of the window's statement (its parameters as literals)."""
    from sqlalchemy import text

    query = capacity.intervals_statement(hist.START, hist.END, store.engine.dialect.name)
    compiled = query.compile(store.engine, compile_kwargs={"literal_binds": True})
    prefix = "EXPLAIN QUERY PLAN " if store.engine.dialect.name == "sqlite" else "EXPLAIN "
    with store.session(readonly=True) as session:
        if store.engine.dialect.name == "postgresql":
            session.execute(text("SET LOCAL enable_seqscan = off"))
        return "\n".join(str(row) for row in session.execute(text(prefix + str(compiled))))


def test_unknown_window_is_refused(store):
    with pytest.raises(ValueError, match="unknown window '2 h'; one of 1 h, 24 h, 7 d"):
        capacity.report(store, "2 h", 4)


def test_wording_helpers():
    assert [duration(s) for s in (None, 45, 240, 9000)] == ["-", "45 s", "4 min", "2.5 h"]
    assert [headroom(p) for p in (1, 3, 11, 40)] == [2, 4, 12, 44]
    db = LimitFigures("db", 8, 0.38, 8, 11, 60, 240, 5000, 4000, 100)
    assert advise([db], "24 h")[0].text == (
        "pool `db` was full 38% of the last 24 h and its tasks waited 4 min at p95: "
        "raise slots 8 → 12 (peak demand 11)"
    )
