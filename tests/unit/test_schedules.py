"""Schedules: Airflow's data-interval semantics, catchup, end_date, DST, serialization."""

from __future__ import annotations

import datetime as dt
import json

import pendulum
import pytest

from engine.exceptions import DagDefinitionError
from engine.sdk.schedules import (
    CronTimetable,
    DataInterval,
    DeltaTimetable,
    NullTimetable,
    OnceTimetable,
    Timetable,
    localize,
    timetable_from_schedule,
)

UTC = pendulum.UTC
AMS = pendulum.timezone("Europe/Amsterdam")


def utc(*args: int) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz="UTC")


def walk(timetable, start, n, *, catchup=True, now=None, end_date=None):
    """The first n intervals a scheduler would create, feeding each end back in."""
    now = now or utc(2030, 1, 1)
    last, found = None, []
    for _ in range(n):
        info = timetable.next_dagrun_info(last, start, end_date, catchup, now)
        if info is None:
            break
        found.append((info.start, info.end))
        last = info.end
    return found


def test_daily_cron_intervals_with_catchup():
    daily = timetable_from_schedule("@daily")
    intervals = walk(daily, utc(2026, 1, 1), 3)
    assert intervals == [
        (utc(2026, 1, 1), utc(2026, 1, 2)),
        (utc(2026, 1, 2), utc(2026, 1, 3)),
        (utc(2026, 1, 3), utc(2026, 1, 4)),
    ]


def test_start_date_off_the_schedule_aligns_to_the_next_boundary():
    info = timetable_from_schedule("@daily").next_dagrun_info(
        None, utc(2026, 1, 1, 10), None, True, utc(2026, 2, 1)
    )
    assert (info.start, info.end) == (utc(2026, 1, 2), utc(2026, 1, 3))


def test_interval_in_the_future_is_returned_with_its_run_after():
    info = timetable_from_schedule("@daily").next_dagrun_info(
        None, utc(2026, 1, 1), None, True, utc(2026, 1, 1, 5)
    )
    assert info == DataInterval(utc(2026, 1, 1), utc(2026, 1, 2))
    assert info.run_after == utc(2026, 1, 2)


def test_no_catchup_starts_from_the_latest_complete_interval():
    daily = timetable_from_schedule("@daily")
    now = utc(2026, 3, 10, 12, 30)
    first = daily.next_dagrun_info(None, utc(2026, 1, 1), None, False, now)
    assert (first.start, first.end) == (utc(2026, 3, 9), utc(2026, 3, 10))
    # a run from long ago does not make the scheduler backfill
    after_old = daily.next_dagrun_info(utc(2026, 1, 5), utc(2026, 1, 1), None, False, now)
    assert after_old.start == utc(2026, 3, 9)
    # a recent last run continues normally
    after_recent = daily.next_dagrun_info(utc(2026, 3, 10), utc(2026, 1, 1), None, False, now)
    assert after_recent.start == utc(2026, 3, 10)


def test_no_catchup_on_a_boundary_takes_the_interval_that_just_ended():
    info = timetable_from_schedule("@daily").next_dagrun_info(
        None, utc(2026, 1, 1), None, False, utc(2026, 3, 10)
    )
    assert (info.start, info.end) == (utc(2026, 3, 9), utc(2026, 3, 10))


def test_no_catchup_respects_a_future_start_date():
    info = timetable_from_schedule("@hourly").next_dagrun_info(
        None, utc(2026, 6, 1, 8, 30), None, False, utc(2026, 1, 1)
    )
    assert (info.start, info.end) == (utc(2026, 6, 1, 9), utc(2026, 6, 1, 10))


def test_catchup_fills_every_interval_from_start():
    hourly = timetable_from_schedule("0 * * * *")
    starts = [s for s, _ in walk(hourly, utc(2026, 1, 1, 22), 4)]
    assert starts == [utc(2026, 1, 1, 22), utc(2026, 1, 1, 23), utc(2026, 1, 2), utc(2026, 1, 2, 1)]


def test_end_date_stops_scheduling():
    daily = timetable_from_schedule("@daily")
    intervals = walk(daily, utc(2026, 1, 1), 10, end_date=utc(2026, 1, 3))
    # an interval starting exactly at end_date is still created, as in Airflow
    assert [s for s, _ in intervals] == [utc(2026, 1, 1), utc(2026, 1, 2), utc(2026, 1, 3)]


def test_presets():
    assert timetable_from_schedule("@hourly").expression == "0 * * * *"
    assert timetable_from_schedule("@weekly").expression == "0 0 * * 0"
    assert timetable_from_schedule("@monthly").expression == "0 0 1 * *"
    assert timetable_from_schedule("@quarterly").expression == "0 0 1 */3 *"
    assert timetable_from_schedule("@yearly").expression == "0 0 1 1 *"
    assert timetable_from_schedule("@annually").expression == "0 0 1 1 *"
    monthly = walk(timetable_from_schedule("@quarterly"), utc(2026, 1, 1), 2)
    assert monthly[1] == (utc(2026, 4, 1), utc(2026, 7, 1))


def test_timedelta_intervals_start_at_start_date():
    every_6h = timetable_from_schedule(dt.timedelta(hours=6))
    start = utc(2026, 1, 1, 1, 15)
    assert walk(every_6h, start, 2) == [
        (start, utc(2026, 1, 1, 7, 15)),
        (utc(2026, 1, 1, 7, 15), utc(2026, 1, 1, 13, 15)),
    ]
    latest = every_6h.next_dagrun_info(None, start, None, False, utc(2026, 1, 3, 0, 0))
    assert (latest.start, latest.end) == (utc(2026, 1, 2, 13, 15), utc(2026, 1, 2, 19, 15))
    early = every_6h.next_dagrun_info(None, start, None, False, utc(2026, 1, 1, 2))
    assert early.start == start


def test_pendulum_duration_schedule():
    tt = timetable_from_schedule(pendulum.duration(days=1))
    assert isinstance(tt, DeltaTimetable) and tt.delta == dt.timedelta(days=1)
    with pytest.raises(DagDefinitionError, match="months or years"):
        timetable_from_schedule(pendulum.duration(months=1), dag_id="m")
    with pytest.raises(DagDefinitionError, match="positive"):
        timetable_from_schedule(dt.timedelta(0))


def test_once_runs_a_single_time_at_start_date():
    once = timetable_from_schedule("@once")
    assert isinstance(once, OnceTimetable)
    start = utc(2026, 5, 1, 12)
    first = once.next_dagrun_info(None, start, None, False, utc(2020, 1, 1))
    assert (first.start, first.end) == (start, start)
    assert once.next_dagrun_info(first.end, start, None, False, utc(2030, 1, 1)) is None
    assert once.next_dagrun_info(None, start, utc(2026, 1, 1), False, utc(2030, 1, 1)) is None


def test_none_never_schedules():
    tt = timetable_from_schedule(None)
    assert isinstance(tt, NullTimetable) and tt.periodic is False
    assert tt.next_dagrun_info(None, utc(2026, 1, 1), None, True, utc(2030, 1, 1)) is None


def test_manual_data_interval_is_the_logical_date():
    for schedule in (None, "@daily", dt.timedelta(hours=1), "@once"):
        interval = timetable_from_schedule(schedule).infer_manual_data_interval(
            dt.datetime(2026, 2, 3, 4, 5)
        )
        assert interval.start == interval.end == utc(2026, 2, 3, 4, 5)


def test_daily_cron_across_amsterdam_dst_change():
    """2026-03-29: clocks go from 02:00 to 03:00 in Europe/Amsterdam."""
    daily = timetable_from_schedule("@daily", AMS)
    start = pendulum.datetime(2026, 3, 27, tz="Europe/Amsterdam")
    intervals = walk(daily, start, 4)
    local = [(s.in_timezone(AMS), e.in_timezone(AMS)) for s, e in intervals]
    for begin, end in local:
        assert (begin.hour, begin.minute, end.hour, end.minute) == (0, 0, 0, 0)
    hours = [(e - s).total_seconds() / 3600 for s, e in intervals]
    assert hours == [24, 24, 23, 24]
    assert intervals[2] == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    for begin, end in intervals:
        assert begin.timezone_name == end.timezone_name == "UTC"


def test_daily_cron_across_autumn_dst_change_is_25_hours():
    daily = timetable_from_schedule("0 0 * * *", AMS)
    intervals = walk(daily, pendulum.datetime(2026, 10, 24, tz="Europe/Amsterdam"), 2)
    assert [(e - s).total_seconds() / 3600 for s, e in intervals] == [24, 25]


def test_hourly_cron_across_dst_keeps_real_hours():
    hourly = timetable_from_schedule("@hourly", AMS)
    intervals = walk(hourly, utc(2026, 3, 29, 0), 2)
    assert intervals == [
        (utc(2026, 3, 29, 0), utc(2026, 3, 29, 1)),
        (utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)),
    ]


def test_localize_resolves_dst_like_airflow():
    # a skipped wall-clock time moves forward, a repeated one means its second occurrence
    assert localize(dt.datetime(2026, 3, 29, 2, 30), AMS) == utc(2026, 3, 29, 1, 30)
    assert localize(dt.datetime(2026, 10, 25, 2, 30), AMS) == utc(2026, 10, 25, 1, 30)
    assert localize(dt.datetime(2026, 7, 1, 12), AMS) == utc(2026, 7, 1, 10)


@pytest.mark.parametrize(
    ("schedule", "fragment"),
    [
        ("not a cron", "5 fields"),
        ("* * *", "5 fields"),
        ("61 * * * *", "61"),
        ("@fortnightly", "unknown preset"),
        ("0 0 * * * *", "5 fields"),
    ],
)
def test_bad_cron_strings_name_the_dag_and_the_string(schedule, fragment):
    with pytest.raises(DagDefinitionError) as info:
        timetable_from_schedule(schedule, dag_id="nightly")
    message = str(info.value)
    assert message.startswith(f"DAG 'nightly': invalid schedule {schedule!r}")
    assert fragment in message


def test_bad_schedule_type():
    with pytest.raises(DagDefinitionError, match="not int: 3"):
        timetable_from_schedule(3)


@pytest.mark.parametrize(
    "timetable",
    [
        NullTimetable(),
        OnceTimetable(),
        CronTimetable("@daily", AMS, summary="@daily"),
        CronTimetable("*/5 * * * *"),
        DeltaTimetable(dt.timedelta(minutes=90)),
        CronTimetable("0 6 * * *", pendulum.FixedTimezone(-5 * 3600)),
    ],
)
def test_serialize_round_trip(timetable):
    data = timetable.serialize()
    restored = Timetable.deserialize(json.loads(json.dumps(data)))
    assert restored == timetable
    assert restored.summary == timetable.summary
    start = utc(2026, 1, 1)
    assert restored.next_dagrun_info(None, start, None, True, utc(2027, 1, 1)) == (
        timetable.next_dagrun_info(None, start, None, True, utc(2027, 1, 1))
    )


def test_summaries():
    assert timetable_from_schedule("@daily").summary == "@daily"
    assert timetable_from_schedule("5 4 * * *").summary == "5 4 * * *"
    assert timetable_from_schedule(dt.timedelta(days=1)).summary == "1 day, 0:00:00"
    assert timetable_from_schedule(None).summary == "None"


@pytest.mark.parametrize(
    ("schedule", "shown"),
    [
        (dt.timedelta(hours=6), "every 6h"),
        (dt.timedelta(days=1, hours=2), "every 1d 2h"),
        (dt.timedelta(days=2), "every 2d"),
        (dt.timedelta(minutes=90), "every 1h 30m"),
        (dt.timedelta(seconds=45), "every 45s"),
        ("@daily", "@daily"),
        ("*/5 * * * *", "*/5 * * * *"),
        (None, "None"),
    ],
)
def test_a_schedule_is_described_the_way_people_read_it(schedule, shown):
    from engine.sdk.schedules import describe_schedule

    assert describe_schedule(timetable_from_schedule(schedule).summary) == shown
