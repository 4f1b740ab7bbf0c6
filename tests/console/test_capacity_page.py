"""The Pools and capacity page through AppTest, on a history whose figures are known: pool
`db` (2 slots) full for 12 of the last 24 hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from console import rollup
from console.queries import capacity_rollup
from tests.console import capacity_seed as hist


@pytest.fixture
def seeded(store):
    """Replaces the console's seed for these tests (the console_app fixture reads it): the
    POOL_FULL history stretched over 24 h, 10 min after the window's start."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=24) + timedelta(minutes=10)
    hist.write(store, *hist.POOL_FULL, start=start, scale=24)
    return SimpleNamespace(store=store)


def test_the_first_screen_says_what_binds_and_what_to_change(console_app):
    _first_screen_says_what_binds(console_app)


def test_the_same_first_screen_from_the_rollup(console_app, seeded):
    """The 24 h window read from the per-minute rollup (its window starts on the minute,
    up to 59 s longer: the same figures at the page's rounding)."""
    now = datetime.now(UTC)
    rollup.catch_up(seeded.store, now, 32, 8 * 86400.0)
    assert capacity_rollup.report(seeded.store, "24 h", 32, now=now) is not None
    _first_screen_says_what_binds(console_app)


def _first_screen_says_what_binds(console_app) -> None:
    app = console_app("capacity")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.title[0].value == "Pools and capacity"
    assert [w.value for w in app.warning] == [
        "pool `db` was full 50% of the last 24 h and its tasks waited 7.2 h at p95: "
        "raise slots 2 → 4 (peak demand 3)"
    ]
    now, window, longest = (frame.value for frame in app.dataframe)
    assert now.set_index("limit").loc["db"].tolist() == [2, 0, 0, 0, 2]
    db = window.set_index("limit").loc["db"]
    assert db["full_%"] == 50.0
    assert (db["peak_used"], db["peak_demand"]) == (2.0, 3.0)
    assert (db["wait_p50_s"], db["wait_p95_s"]) == (0.0, 25920.0)
    assert db["waited_task_s"] == db["waited_while_full_task_s"] == 1200.0 * 24
    assert list(longest.task_id) == ["load_3"]
    assert app.selectbox[0].value == "db"  # the chart opens on the binding limit


def test_a_shorter_window_sees_none_of_it(console_app):
    app = console_app("capacity", window="1 h")
    app.run()
    assert not app.exception
    assert app.radio[0].value == "1 h"
    assert not app.warning
    assert app.success[0].value.startswith("no limit was binding in the last 1 h")


def test_celery_workers_and_queues_show_when_there_are_workers(console_app, seeded):
    from engine.store import workers

    now = datetime.now(UTC)
    with seeded.store.session() as session:
        worker_id = workers.start_worker(
            session, name="a@h1", hostname="h1", pid=1, queues=["default", "big"],
            concurrency=4, now=now,
        )  # fmt: skip
        workers.heartbeat_worker(session, worker_id, now, {"big": 1})
    app = console_app("capacity")
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert "Celery workers and queues" in [h.value for h in app.subheader]
    queues, slots = (frame.value for frame in app.dataframe[3:])
    big = queues.set_index("queue").loc["big"]
    assert (big["workers"], big["slots"], big["running"], big["open"]) == (1, 4, 1, 3)
    assert list(zip(slots.queue, slots.running, slots.open, strict=True)) == [
        ("default", 0, 3),
        ("big", 1, 3),
    ]
