"""The capacity rollup: per-minute buckets added up over a window give the raw
computation's figures on the three seeded histories (SQLite and PostgreSQL); writing a
range again gives the same rows; old buckets are pruned."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from console.advice import EXECUTOR
from console.queries import capacity, capacity_rollup
from engine.store.models import CapacityBucket
from tests.console import capacity_seed as hist


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
