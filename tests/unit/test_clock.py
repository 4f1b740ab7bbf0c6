"""The injected clock: the fake one moves only when told, timers are due by it, and the
scheduler's notes of what changed between ticks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from engine import hooks
from engine.clock import SYSTEM, Every, FakeClock
from engine.scheduling.dirty import WAITING, WHOLE, DirtyRuns, RunChange

T0 = datetime(2026, 1, 10, 12, tzinfo=UTC)


def test_the_fake_clock_moves_only_when_told():
    clock = FakeClock(T0)
    assert (clock.now(), clock.monotonic()) == (T0, 0.0)
    clock.advance(1.5)
    clock.advance(timedelta(minutes=1))
    assert (clock.now(), clock.monotonic()) == (T0 + timedelta(seconds=61.5), 61.5)


def test_setting_the_wall_clock_back_leaves_the_monotonic_clock_alone():
    clock = FakeClock(T0)
    clock.set(T0 + timedelta(seconds=30))
    clock.set(T0 + timedelta(seconds=10))  # an NTP step back
    assert (clock.now(), clock.monotonic()) == (T0 + timedelta(seconds=10), 30.0)
    clock.set(T0 + timedelta(seconds=15))
    assert clock.monotonic() == 35.0


def test_a_naive_time_or_a_step_back_is_refused():
    clock = FakeClock(T0)
    with pytest.raises(ValueError, match="aware"):
        clock.set(datetime(2026, 1, 10))
    with pytest.raises(ValueError, match="positive"):
        clock.advance(-1)
    assert (clock.now(), clock.monotonic()) == (T0, 0.0)


def test_the_system_clock_is_aware_utc_and_monotonic():
    first = SYSTEM.monotonic()
    assert SYSTEM.now().tzinfo is UTC
    assert SYSTEM.monotonic() >= first


def test_a_timer_is_due_at_first_then_once_its_interval_passed_or_when_hurried():
    clock = FakeClock(T0)
    timer = Every(clock, 5.0)
    assert [timer.due(), timer.due()] == [True, False]
    clock.advance(4.9)
    assert not timer.due()
    clock.advance(0.1)
    assert [timer.due(), timer.due()] == [True, False]
    timer.hurry()
    assert [timer.due(), timer.due()] == [True, False]


def test_a_zero_interval_timer_is_always_due():
    timer = Every(FakeClock(T0), 0.0)
    assert [timer.due(), timer.due()] == [True, True]


def test_a_service_factory_taking_a_clock_gets_the_schedulers():
    clock = FakeClock(T0)
    made = []

    def with_clock(config, store, *, clock):
        made.append(clock)
        return SimpleNamespace(name="with")

    def without(config, store):
        made.append(None)
        return SimpleNamespace(name="without")

    hooks.build_service(with_clock, {}, None, clock)
    hooks.build_service(without, {}, None, clock)
    assert made == [clock, None]


def run(dag_id: str, run_id: str) -> SimpleNamespace:
    return SimpleNamespace(dag_id=dag_id, run_id=run_id)


def test_dirty_runs_give_the_changed_tasks_then_start_afresh():
    dirty = DirtyRuns()
    a, b, c = run("d", "a"), run("d", "b"), run("d", "c")
    dirty.task_changed("d", "a", "t1")
    dirty.task_changed("d", "a", "t2")
    dirty.run_changed("d", "b")
    dirty.task_changed("d", "b", "t1")  # a run decided whole covers its tasks
    dirty.task_changed("d", "gone", "t1")  # no longer running: dropped
    assert dirty.take([a, b, c], full=False) == [
        (a, RunChange(tasks=frozenset({"t1", "t2"}))),
        (b, WHOLE),
    ]
    assert dirty.take([a, b, c], full=False) == []


def test_a_full_pass_decides_every_running_run_whole_or_on_what_waits():
    dirty = DirtyRuns()
    a, b, c = run("d", "a"), run("d", "b"), run("d", "c")
    dirty.task_changed("d", "a", "t1")
    dirty.run_changed("d", "b")
    assert dirty.take([a, b, c], full=True) == [(a, WAITING), (b, WHOLE), (c, WAITING)]


def test_a_run_put_back_is_decided_next_tick_as_it_was_noted():
    dirty = DirtyRuns()
    a, b, c = run("d", "a"), run("d", "b"), run("d", "c")
    dirty.put_back(a, RunChange(tasks=frozenset({"t1"})))
    dirty.put_back(b, WHOLE)
    dirty.put_back(c, WAITING)  # the next full pass finds it again
    assert dirty.take([a, b, c], full=False) == [
        (a, RunChange(tasks=frozenset({"t1"}))),
        (b, WHOLE),
    ]
