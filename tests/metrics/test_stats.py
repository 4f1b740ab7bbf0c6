"""The facade: catalog checks, strict mode, custom metrics, never raising into callers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta

import pytest

import metrics
from metrics import MetricMisuse, MetricsSettings, Stats, UnknownMetric, configure
from metrics.catalog import Metric
from metrics.guard import Guard
from metrics.testing import Emission, MemoryBackend

DT = {"dag_id": "etl", "task_id": "load"}


@pytest.fixture
def recorder() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def strict(recorder: MemoryBackend) -> Stats:
    return Stats([recorder], strict=True)


def test_calls_reach_the_backend_with_labels_in_catalog_order(
    strict: Stats, recorder: MemoryBackend
) -> None:
    strict.incr("ti.finish", tags={"state": "success", **DT})
    strict.gauge("pool.open_slots", 3, tags={"pool": "default_pool"})
    strict.timing("task.duration", timedelta(seconds=1.5), tags=DT)
    strict.incr("pool.open_slots", 2, tags={"pool": "default_pool"})
    strict.decr("pool.open_slots", tags={"pool": "default_pool"})
    assert recorder.emissions == [
        Emission(
            "count", "ti.finish", 1.0, {"dag_id": "etl", "task_id": "load", "state": "success"}
        ),
        Emission("gauge", "pool.open_slots", 3.0, {"pool": "default_pool"}),
        Emission("timing", "task.duration", 1.5, DT),
        Emission("gauge_delta", "pool.open_slots", 2.0, {"pool": "default_pool"}),
        Emission("gauge_delta", "pool.open_slots", -1.0, {"pool": "default_pool"}),
    ]
    assert list(recorder.emissions[0].labels) == ["dag_id", "task_id", "state"]


def test_strict_mode_raises_on_a_name_missing_from_the_catalog(strict: Stats) -> None:
    with pytest.raises(UnknownMetric, match=r"'ti\.finsh' is not in the metrics catalog"):
        strict.incr("ti.finsh", tags=DT)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.gauge("ti.finish", 1, tags={**DT, "state": "x"}), "is a counter"),
        (lambda s: s.decr("ti_failures", tags=DT), "is a counter"),
        (lambda s: s.incr("task.duration", tags=DT), "is a timer"),
        (lambda s: s.incr("ti_failures", tags={"dag_id": "etl"}), r"missing \['task_id'\]"),
        (lambda s: s.incr("ti_failures", tags={**DT, "run_id": "r1"}), r"unknown \['run_id'\]"),
        (lambda s: s.gauge("dagbag_size", "many"), "needs a number"),
        (lambda s: s.incr("scheduler_heartbeat", -1), "non-negative"),
    ],
)
def test_strict_mode_raises_on_misuse(strict: Stats, call, message: str) -> None:
    with pytest.raises(MetricMisuse, match=message):
        call(strict)


def test_lenient_mode_logs_once_and_never_raises(
    recorder: MemoryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    lenient = Stats([recorder])
    with caplog.at_level(logging.WARNING, logger="metrics.stats"):
        for _ in range(3):
            lenient.incr("no.such.metric")
            lenient.gauge("dagbag_size", float("nan"))
    lenient.incr("ti_failures", tags={"dag_id": "etl", "hostname": "worker-7"})
    assert recorder.emissions == [
        Emission("count", "ti_failures", 1.0, {"dag_id": "etl", "task_id": "none"})
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("no.such.metric" in m for m in messages) == 1
    assert sum("finite" in m for m in messages) == 1


class Broken:
    """A backend whose every call fails, like a full disk or a dead socket."""

    def __getattr__(self, name: str):
        def fail(*args: object, **kwargs: object) -> None:
            raise OSError("backend down")

        return fail


def test_a_broken_backend_is_logged_and_skipped_even_in_strict_mode(
    recorder: MemoryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    stats = Stats([Broken(), recorder], strict=True)
    with caplog.at_level(logging.WARNING, logger="metrics.stats"):
        stats.incr("ti_failures", tags=DT)
        stats.incr("ti_failures", tags=DT)
        stats.flush()
        stats.close()
    assert len(recorder.values("ti_failures")) == 2
    assert recorder.flushes == 1 and recorder.closed
    assert sum("backend failed" in r.getMessage() for r in caplog.records) == 1


def test_custom_metrics_go_under_the_custom_prefix(strict: Stats, recorder: MemoryBackend) -> None:
    strict.incr("custom.rows_loaded", 42, tags={"Team": "data eng"})
    strict.gauge("custom.Queue-Depth", 7)
    with strict.timer("custom.step", tags={"step": "parse"}) as timer:
        timer.tags["step"] = "parsed"
    assert recorder.emissions[0] == Emission(
        "count", "custom.rows_loaded", 42.0, {"team": "data_eng"}
    )
    assert recorder.emissions[1] == Emission("gauge", "custom.queue_depth", 7.0, {})
    assert recorder.emissions[2].name == "custom.step"
    assert recorder.emissions[2].labels == {"step": "parsed"}
    assert timer.duration is not None and timer.duration >= 0
    with pytest.raises(MetricMisuse, match="first emitted with labels"):
        strict.incr("custom.rows_loaded", tags={"other": "x"})
    with pytest.raises(MetricMisuse, match="is a counter"):
        strict.gauge("custom.rows_loaded", 1, tags={"team": "x"})
    with pytest.raises(MetricMisuse, match=r"forbidden labels \['run_id'\]"):
        strict.incr("custom.per_run", tags={"run_id": "scheduled__2024"})
    with pytest.raises(MetricMisuse, match="must start with a letter"):
        strict.incr("custom.__")
    strict.gauge("custom.backlog_total", 3)  # a gauge must not look like a counter
    assert recorder.emissions[-1].name == "custom.backlog"


def test_custom_metric_values_are_capped_by_the_guard(recorder: MemoryBackend) -> None:
    stats = Stats([recorder], strict=True, guard=Guard(max_series=2))
    for customer in ("a", "b", "c", "d"):
        stats.incr("custom.orders", tags={"customer": customer})
    assert [labels["customer"] for labels, _ in recorder.values("custom.orders")] == [
        "a",
        "b",
        "__overflow__",
        "__overflow__",
    ]


def test_allow_and_block_lists_drop_before_any_backend(recorder: MemoryBackend) -> None:
    stats = Stats([recorder], strict=True, allow=["ti", "pool"], block=["ti.start"])
    stats.incr("ti.start", tags=DT)
    stats.incr("ti_failures", tags=DT)
    stats.incr("scheduler_heartbeat")
    stats.incr("not.in.catalog")  # blocked by the allow list before the name check
    assert [e.name for e in recorder.emissions] == ["ti_failures"]


def test_the_module_proxy_is_a_no_op_until_configured() -> None:
    metrics.stats.incr("custom.before_configure")
    metrics.stats.incr("ti.finsh")  # unknown, but nothing is configured: dropped quietly
    with metrics.stats.timer("task.duration", tags=DT):
        pass
    assert metrics.stats.target.backends == ()


def test_configure_installs_a_strict_stats_behind_the_proxy() -> None:
    configured = configure(MetricsSettings(strict=True))
    assert metrics.stats.target is configured
    recorder = MemoryBackend()
    configured.backends = (recorder,)
    metrics.stats.incr("ti_successes", tags=DT)
    with pytest.raises(UnknownMetric):
        metrics.stats.incr("ti_sucesses", tags=DT)
    with pytest.raises(ValueError, match="allowed values"):
        configure(MetricsSettings(statsd_on=True, statsd_tags_mode="graphite"))
    assert recorder.values("ti_successes") == [(DT, 1.0)]


def test_metric_labels_mapping_types() -> None:
    """Backends receive plain str -> str mappings, whatever the caller passed."""
    recorder = MemoryBackend()
    Stats([recorder]).gauge("ti.running", 2, tags={"queue": None, "dag_id": 7, "task_id": "t"})
    labels: Mapping[str, str] = recorder.emissions[0].labels
    assert labels == {"queue": "none", "dag_id": "7", "task_id": "t"}
    assert isinstance(Metric.custom_metric("custom.x", "timer", ()).unit, str)
