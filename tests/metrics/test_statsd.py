"""StatsD over real UDP on loopback: Airflow's plain names, dogstatsd and influxdb tags."""

from __future__ import annotations

import logging
import re

import pytest

from metrics import Stats
from metrics.guard import MAX_STATSD_NAME_LENGTH
from metrics.statsd import StatsdBackend
from tests.metrics.conftest import UdpReceiver

DT = {"dag_id": "etl", "task_id": "load"}
LINE = re.compile(r"^(?P<name>[^:|#]+):(?P<value>[+-]?[\d.]+)\|(?P<type>c|g|ms)(?P<tags>\|#.*)?$")


def stats_for(udp: UdpReceiver, tags_mode: str = "none", prefix: str = "dagwatch") -> Stats:
    return Stats([StatsdBackend("127.0.0.1", udp.port, prefix, tags_mode)], strict=True)


def test_plain_mode_sends_airflow_legacy_names(udp: UdpReceiver) -> None:
    stats = stats_for(udp)
    stats.incr("ti.finish", tags={**DT, "state": "success"})
    stats.incr("ti_failures", 2, tags=DT)
    stats.gauge("pool.open_slots", 12, tags={"pool": "default_pool"})
    stats.timing("task.duration", 1.25, tags=DT)
    stats.gauge("dag_processing.total_parse_time", 0.5)
    stats.incr("operator_failures", tags={"operator": "BashOperator"})
    stats.timing("dagrun.first_task_scheduling_delay", 0.004, tags={"dag_id": "etl"})
    lines = udp.lines(7)
    stats.close()
    assert lines == [
        "dagwatch.ti.finish.etl.load.success:1|c",
        "dagwatch.ti_failures:2|c",
        "dagwatch.pool.open_slots.default_pool:12|g",
        "dagwatch.dag.etl.load.duration:1250|ms",
        "dagwatch.dag_processing.total_parse_time:0.5|g",
        "dagwatch.operator_failures_BashOperator:1|c",
        "dagwatch.dagrun.etl.first_task_scheduling_delay:4|ms",
    ]
    for line in lines:
        assert LINE.match(line), line


def test_dogstatsd_mode_uses_the_canonical_name_and_tags(udp: UdpReceiver) -> None:
    stats = stats_for(udp, "dogstatsd")
    stats.incr("ti.finish", tags={**DT, "state": "failed"})
    stats.timing("task.duration", 0.0125, tags=DT)
    stats.incr("scheduler_heartbeat")
    lines = udp.lines(3)
    stats.close()
    assert lines == [
        "dagwatch.ti.finish:1|c|#dag_id:etl,task_id:load,state:failed",
        "dagwatch.task.duration:12.5|ms|#dag_id:etl,task_id:load",
        "dagwatch.scheduler_heartbeat:1|c",
    ]
    parsed = LINE.match(lines[0])
    assert parsed and parsed["tags"] == "|#dag_id:etl,task_id:load,state:failed"


def test_influxdb_mode_puts_tags_after_the_name(udp: UdpReceiver) -> None:
    stats = stats_for(udp, "influxdb", prefix="")
    stats.gauge("ti.running", 3, tags={"queue": "default", **DT})
    stats.incr("custom.rows_loaded", 5, tags={"team": "data"})
    assert udp.lines(2) == [
        "ti.running,queue=default,dag_id=etl,task_id=load:3|g",
        "custom.rows_loaded,team=data:5|c",
    ]
    stats.close()


def test_gauges_absolute_negative_and_relative(udp: UdpReceiver) -> None:
    stats = stats_for(udp)
    stats.gauge("deadline.slack_seconds", -30, tags={"dag_id": "etl"})
    stats.incr("executor.running_tasks", 2)
    stats.decr("executor.running_tasks")
    # a leading '-' means "decrement" in StatsD, so a negative value is set from 0
    assert udp.lines(4) == [
        "dagwatch.deadline.slack_seconds.etl:0|g",
        "dagwatch.deadline.slack_seconds.etl:-30|g",
        "dagwatch.executor.running_tasks:+2|g",
        "dagwatch.executor.running_tasks:-1|g",
    ]
    stats.close()


def test_odd_and_long_dag_ids_are_sanitised_and_length_capped(udp: UdpReceiver) -> None:
    stats = stats_for(udp)
    stats.incr("ti.finish", tags={"dag_id": "sales eu/v2.daily", "task_id": "t:1", "state": "ok"})
    huge = {"dag_id": "d" * 400, "task_id": "t" * 400, "state": "success"}
    stats.incr("ti.finish", tags=huge)
    odd, long = udp.lines(2)
    stats.close()
    assert odd == "dagwatch.ti.finish.sales_eu_v2_daily.t_1.ok:1|c"
    name = long.split(":")[0]
    assert len(name) <= MAX_STATSD_NAME_LENGTH
    assert name.startswith("dagwatch.ti.finish.ddd") and name.endswith(".success")
    assert name.count(".") == 5  # still one segment per variable


def test_send_errors_are_logged_never_raised(
    udp: UdpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    stats = stats_for(udp, "dogstatsd", prefix="p" * 70_000)  # larger than any UDP datagram
    with caplog.at_level(logging.WARNING, logger="metrics.statsd"):
        stats.incr("scheduler_heartbeat")
        stats.incr("scheduler_heartbeat")
    stats.close()
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1  # once per outage, not once per value
    assert failures[0].startswith(f"statsd send to 127.0.0.1:{udp.port} failed")
    assert udp.nothing_more()


def test_an_unknown_tags_mode_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="allowed values"):
        StatsdBackend(tags_mode="graphite")  # type: ignore[arg-type]
