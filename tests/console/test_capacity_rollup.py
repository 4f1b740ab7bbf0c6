"""The capacity rollup: per-minute buckets added up over a window give the raw
computation's figures on the three seeded histories (SQLite and PostgreSQL); writing a
range again gives the same rows; old buckets are pruned."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import delete, select

from console import plugin as console_plugin
from console import rollup
from console.advice import EXECUTOR
from console.queries import capacity, capacity_rollup
from engine import hooks
from engine.clock import FakeClock
from engine.execution.stub import StubExecutor
from engine.scheduling.scheduler import Scheduler
from engine.store.models import CapacityBucket
from tests.console import capacity_seed as hist
from tests.integration.test_scheduler_tick import T0


def _rows(store) -> list[tuple]:
    with store.session(readonly=True) as session:
        return [
            tuple(getattr(b, c) for c in ("limit_name", "minute", *capacity_rollup.FIGURES))
            for b in session.scalars(
                select(CapacityBucket).order_by(CapacityBucket.limit_name, CapacityBucket.minute)
            )
        ]


@pytest.mark.parametrize("name", ["POOL_FULL", "DELAYS", "PARALLELISM"])
def test_buckets_add_up_to_the_raw_figures(store, name):
    sizes, tries = getattr(hist, name)
    parallelism = 4 if name == "PARALLELISM" else 32
    hist.write(store, sizes, tries)
    raw = capacity.report(store, "1 h", parallelism, now=hist.END)
    assert capacity_rollup.write(store, hist.START, 60, parallelism) == 60 * len(raw.figures)
    assert capacity_rollup.covered(store, hist.START, hist.END)
    rolled = capacity_rollup.rolled(store, hist.START, hist.END)
    assert set(rolled) == {f.name for f in raw.figures}
    executor_only = raw.figures[0].waited_on_it
    for f in raw.figures:
        r = rolled[f.name]
        assert r.size == f.size
        assert r.seconds_full / r.seconds == f.full_share
        assert (r.peak_used, r.peak_demand) == (f.peak_used, f.peak_demand)
        assert r.waited == pytest.approx(f.waited, abs=1e-6)
        assert r.tries == f.tries
        if f.name == EXECUTOR:
            assert r.waited_executor_only == executor_only
        else:
            assert r.waited_full == f.waited_on_it
    # the figures the tests of the raw page check, from the buckets
    if name == "POOL_FULL":
        assert rolled["db"].seconds_full == 1800 and rolled["db"].waited == 1200.0


def test_writing_again_gives_the_same_rows_and_old_buckets_are_pruned(store):
    sizes, tries = hist.POOL_FULL
    hist.write(store, sizes, tries)
    capacity_rollup.write(store, hist.START, 60, 32)
    first = _rows(store)
    capacity_rollup.write(store, hist.START + timedelta(minutes=30), 30, 32)
    capacity_rollup.write(store, hist.START, 60, 32)
    assert _rows(store) == first
    limits = {row[0] for row in first}
    assert limits == {EXECUTOR, "db", "default_pool"}
    assert len(first) == 60 * len(limits)
    assert not capacity_rollup.covered(store, hist.START - timedelta(minutes=1), hist.END)
    pruned = capacity_rollup.prune(store, hist.START + timedelta(minutes=45))
    assert pruned == 45 * len(limits)
    assert {row[1] for row in _rows(store)} == {
        hist.START + timedelta(minutes=k) for k in range(45, 60)
    }
    assert capacity_rollup.covered(store, hist.START + timedelta(minutes=45), hist.END)


def test_two_schedulers_rewriting_the_same_minutes_take_turns(store):
    """Every scheduler runs the rollup's writer: on PostgreSQL two rewriting the same
    minutes at once used to insert each other's rows again (a duplicate key)."""
    sizes, tries = hist.POOL_FULL
    hist.write(store, sizes, tries)
    capacity_rollup.write(store, hist.START, 60, 32)
    expected = _rows(store)
    for _ in range(5):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def rewrite(barrier: threading.Barrier = barrier, errors: list = errors) -> None:
            barrier.wait(timeout=60)
            try:
                capacity_rollup.write(store, hist.START, 60, 32)
            except BaseException as exc:  # reported below, with the other writer's
                errors.append(exc)

        writers = [threading.Thread(target=rewrite) for _ in range(2)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(timeout=120)
        assert errors == []
        assert _rows(store) == expected


def test_a_pass_fills_the_closed_minutes_rewrites_the_last_and_prunes_by_age(store):
    sizes, tries = hist.POOL_FULL
    hist.write(store, sizes, tries)
    now = hist.END + timedelta(seconds=30)
    written, pruned = rollup.catch_up(store, now, 32, 8 * 86400.0)
    assert pruned == 0
    assert capacity_rollup.covered(store, hist.START, hist.END)
    first = _rows(store)
    assert written == len(first)
    # the open minute (END, END + 30 s) is not written
    assert max(row[1] for row in first) == hist.END - timedelta(minutes=1)
    again, _ = rollup.catch_up(store, now, 32, 8 * 86400.0)
    assert again == rollup.REWRITE_MINUTES * 3  # executor, db, default_pool
    assert _rows(store) == first
    # nine days later, with a day kept: what is older than a day goes
    later = hist.END + timedelta(days=9)
    _, pruned = rollup.catch_up(store, later, 32, 86400.0)
    assert pruned == len(first)
    assert min(row[1] for row in _rows(store)) == later - timedelta(days=1)


def test_the_writer_runs_in_its_own_thread_never_in_the_tick(store, config, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(
        rollup, "catch_up", lambda *args: calls.append(threading.current_thread().name)
    )
    registry = hooks.install(config, plugins=[console_plugin])
    assert registry.tick_hooks == [] and len(registry.services) == 1
    scheduler = Scheduler(store, config, StubExecutor(), clock=FakeClock(T0), registry=registry)
    try:
        scheduler.start()
        for _ in range(3):
            scheduler.tick(T0)
        deadline = time.monotonic() + 60
        while not calls and time.monotonic() < deadline:
            scheduler.tick(T0)
            time.sleep(0.2)
    finally:
        scheduler.shutdown(5)
        hooks.uninstall()
    assert calls and set(calls) == {"dagwatch-capacity-rollup"}


@pytest.mark.parametrize("name", ["POOL_FULL", "DELAYS", "PARALLELISM"])
@pytest.mark.parametrize("window", ["24 h", "7 d"])
def test_the_page_from_the_rollup_gives_the_raw_figures(store, name, window, monkeypatch):
    if window == "24 h":  # written 7 minutes per read: waits and holds cross the reads
        monkeypatch.setattr(rollup, "CHUNK_MINUTES", 7)
    retention = (capacity.WINDOWS[window] + timedelta(hours=1)).total_seconds()
    sizes, tries = getattr(hist, name)
    parallelism = 4 if name == "PARALLELISM" else 32
    hist.write(store, sizes, tries)
    for now in (hist.END, hist.END + timedelta(seconds=25)):  # with an open minute, too
        raw = capacity.report(store, window, parallelism, now=now)  # no bucket yet: raw
        assert capacity_rollup.report(store, window, parallelism, now=now) is None
        rollup.catch_up(store, now, parallelism, retention)
        rolled = capacity_rollup.report(store, window, parallelism, now=now)
        assert rolled is not None
        if now == hist.END:  # a whole minute: the same window
            assert rolled.start == raw.start
            assert rolled.table().equals(raw.table()), (rolled.table(), raw.table())
        else:  # the rollup's window starts on the minute: 25 s longer
            assert rolled.start == raw.start - timedelta(seconds=25)
        assert [(a.level, a.text) for a in rolled.advice] == [(a.level, a.text) for a in raw.advice]
        page = capacity.report(store, window, parallelism, now=now)
        assert page.table().equals(rolled.table())
        assert page.longest.equals(raw.longest), (page.longest, raw.longest)
        with store.session() as session:
            session.execute(delete(CapacityBucket))
