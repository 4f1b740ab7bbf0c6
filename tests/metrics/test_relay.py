"""The relay: what a forked attempt process emits reaches the parent's backends intact."""

from __future__ import annotations

import os
import pickle

import pytest

from metrics import MetricMisuse, Stats
from metrics.relay import RelayBackend, Relayed
from metrics.testing import Emission, MemoryBackend

DT = {"dag_id": "etl", "task_id": "load"}


def _emit_in_child(emit) -> list[Relayed]:
    """Fork, let `emit(stats)` run against a relay in the child, return what it drained."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only os._exit leaves it
        code = 1
        try:
            os.close(read)
            relay = RelayBackend(max_timings=3)
            emit(Stats([relay], strict=True))
            os.write(write, pickle.dumps(relay.drain()))
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pickle.loads(b"".join(chunks))


def test_counters_sum_gauges_keep_the_last_value_and_timings_stay_apart() -> None:
    def emit(stats: Stats) -> None:
        stats.incr("ti.start", tags=DT)
        stats.incr("ti.start", tags=DT)
        stats.incr("ti.start", tags={"dag_id": "etl", "task_id": "other"})
        stats.gauge("pool.open_slots", 5, tags={"pool": "p"})
        stats.decr("pool.open_slots", 2, tags={"pool": "p"})
        stats.gauge("pool.open_slots", 7, tags={"pool": "p"})
        stats.timing("task.duration", 1.5, tags=DT)
        stats.timing("task.duration", 2.5, tags=DT)

    records = _emit_in_child(emit)
    recorder = MemoryBackend()
    Stats([recorder], strict=True).replay(records)
    assert recorder.emissions == [
        Emission("count", "ti.start", 2.0, DT),
        Emission("count", "ti.start", 1.0, {"dag_id": "etl", "task_id": "other"}),
        Emission("gauge", "pool.open_slots", 7.0, {"pool": "p"}),
        Emission("timing", "task.duration", 1.5, DT),
        Emission("timing", "task.duration", 2.5, DT),
    ]


def test_a_moved_custom_gauge_is_still_a_gauge_in_the_parent() -> None:
    def emit(stats: Stats) -> None:
        stats.gauge("custom.backlog", 10, tags={"team": "data"})
        stats.incr("custom.backlog", 3, tags={"team": "data"})
        stats.decr("custom.queue_depth", 4)

    recorder = MemoryBackend()
    parent = Stats([recorder], strict=True)
    parent.replay(_emit_in_child(emit))
    assert recorder.emissions == [
        Emission("gauge", "custom.backlog", 10.0, {"team": "data"}),
        Emission("gauge_delta", "custom.backlog", 3.0, {"team": "data"}),
        Emission("gauge_delta", "custom.queue_depth", -4.0, {}),
    ]
    # the parent now knows it as a gauge: setting it works, a counter call does not fit
    parent.gauge("custom.queue_depth", 1)
    assert recorder.emissions[-1] == Emission("gauge", "custom.queue_depth", 1.0, {})


def test_durations_past_the_cap_are_dropped_not_buffered() -> None:
    def emit(stats: Stats) -> None:
        for second in range(10):
            stats.timing("task.duration", second, tags=DT)

    records = _emit_in_child(emit)
    assert [r.value for r in records] == [0.0, 1.0, 2.0]


def test_the_parent_guard_still_applies_to_relayed_values() -> None:
    bad = [Relayed("count", "ti.start", "counter", 1.0, (("dag_id", "etl"),))]
    with pytest.raises(MetricMisuse, match="task_id"):
        Stats([MemoryBackend()], strict=True).replay(bad)
    recorder = MemoryBackend()
    Stats([recorder], block=["ti."]).replay(bad)  # blocked in the parent: nothing emitted
    assert recorder.emissions == []
