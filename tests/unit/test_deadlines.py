"""DAG deadlines: the authoring API, its validation, and when a run's deadline falls."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from datetime import timedelta

import pendulum
import pytest

from engine import DAG, Deadline, DeadlineReference
from engine.exceptions import DagDefinitionError
from engine.sdk.deadlines import scheduled_time

UTC = dt.UTC
AMS = pendulum.timezone("Europe/Amsterdam")


@dataclass
class Run:
    run_type: str
    logical_date: dt.datetime
    data_interval_end: dt.datetime | None
    queued_at: dt.datetime | None


SCHEDULED = Run(
    "scheduled",
    logical_date=dt.datetime(2026, 3, 1, 23, tzinfo=UTC),  # Amsterdam: March 2, 00:00
    data_interval_end=dt.datetime(2026, 3, 2, 23, tzinfo=UTC),  # March 3, 00:00 local
    queued_at=dt.datetime(2026, 3, 2, 23, 0, 5, tzinfo=UTC),
)
MANUAL = Run(
    "manual",
    logical_date=dt.datetime(2026, 3, 2, 10, tzinfo=UTC),
    data_interval_end=dt.datetime(2026, 3, 2, 10, tzinfo=UTC),
    queued_at=dt.datetime(2026, 3, 2, 10, 0, 1, tzinfo=UTC),
)


def test_a_timedelta_is_shorthand_for_the_scheduled_time():
    d = DAG("short", deadline=timedelta(hours=2))
    assert d.deadline == Deadline(DeadlineReference.DAGRUN_SCHEDULED_TIME, timedelta(hours=2))
    assert d.deadline.deadline_for(SCHEDULED, UTC) == dt.datetime(2026, 3, 3, 1, tzinfo=UTC)
    assert d.deadline.deadline_for(MANUAL, UTC) == dt.datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC)
    assert scheduled_time(SCHEDULED) == SCHEDULED.data_interval_end
    assert scheduled_time(MANUAL) == MANUAL.queued_at


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (DeadlineReference.DAGRUN_LOGICAL_DATE, dt.datetime(2026, 3, 1, 23, 30, tzinfo=UTC)),
        (DeadlineReference.DAGRUN_DATA_INTERVAL_END, dt.datetime(2026, 3, 2, 23, 30, tzinfo=UTC)),
        (DeadlineReference.DAGRUN_QUEUED_AT, dt.datetime(2026, 3, 2, 23, 30, 5, tzinfo=UTC)),
    ],
)
def test_relative_references(reference, expected):
    deadline = Deadline(reference, timedelta(minutes=30))
    assert deadline.deadline_for(SCHEDULED, AMS) == expected


def test_time_of_day_is_local_on_the_day_the_data_interval_ends_across_dst():
    seven = Deadline(DeadlineReference.TIME_OF_DAY("07:00"))
    # The interval ends March 3, 00:00 in Amsterdam (UTC+1): 07:00 local is 06:00 UTC.
    assert seven.deadline_for(SCHEDULED, AMS) == dt.datetime(2026, 3, 3, 6, tzinfo=UTC)
    summer = Run(
        "scheduled",
        logical_date=dt.datetime(2026, 4, 1, 22, tzinfo=UTC),
        data_interval_end=dt.datetime(2026, 4, 2, 22, tzinfo=UTC),  # April 3, 00:00 (UTC+2)
        queued_at=None,
    )
    assert seven.deadline_for(summer, AMS) == dt.datetime(2026, 4, 3, 5, tzinfo=UTC)
    next_day = Deadline(DeadlineReference.TIME_OF_DAY(dt.time(7, 0)), timedelta(days=1))
    assert next_day.deadline_for(SCHEDULED, AMS) == dt.datetime(2026, 3, 4, 6, tzinfo=UTC)


def test_recent_runs_learns_the_interval_from_history():
    learned = Deadline(
        DeadlineReference.DAGRUN_QUEUED_AT, Deadline.recent_runs(n=3, factor=2, min_runs=2)
    )
    assert learned.deadline_for(SCHEDULED, UTC, durations=[60.0]) is None  # too few runs
    at = learned.deadline_for(SCHEDULED, UTC, durations=[60.0, 120.0, 90.0, 5000.0])
    assert at == SCHEDULED.queued_at + timedelta(seconds=2 * 90)  # the newest three
    assert Deadline.recent_runs().min_runs == 3 and Deadline.recent_runs(n=2).min_runs == 2


def test_backfill_runs_have_no_deadline():
    backfill = Run("backfill", SCHEDULED.logical_date, SCHEDULED.data_interval_end, None)
    assert DAG("b", deadline=timedelta(hours=1)).deadline.deadline_for(backfill, UTC) is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DAG("bad", deadline=60), "DAG 'bad': deadline must be a timedelta or a Deadline"),
        (lambda: DAG("bad", deadline=timedelta(0)), "DAG 'bad': deadline must be a positive"),
        (lambda: Deadline("queued_at", timedelta(1)), "deadline reference must be one of"),
        (lambda: Deadline(DeadlineReference.DAGRUN_QUEUED_AT), "interval must be a timedelta"),
        (
            lambda: Deadline(DeadlineReference.DAGRUN_QUEUED_AT, timedelta(minutes=-5)),
            "interval must be positive",
        ),
        (lambda: DeadlineReference.TIME_OF_DAY("25:00"), "time of day '25:00' is invalid"),
        (lambda: DeadlineReference.TIME_OF_DAY("7am"), "use 'HH:MM'"),
        (
            lambda: DeadlineReference.TIME_OF_DAY(dt.time(7, tzinfo=UTC)),
            "must be naive",
        ),
        (
            lambda: Deadline(DeadlineReference.TIME_OF_DAY("07:00"), Deadline.recent_runs()),
            "cannot learn its interval",
        ),
        (lambda: Deadline.recent_runs(n=0), r"recent_runs\(n=...\) must be an integer >= 1"),
        (lambda: Deadline.recent_runs(factor=0), r"recent_runs\(factor=...\) must be > 0"),
        (lambda: Deadline.recent_runs(n=5, min_runs=6), "from 1 to n"),
    ],
)
def test_invalid_deadlines_are_refused_at_definition_time(make, message):
    with pytest.raises(DagDefinitionError, match=message):
        make()


def test_describe():
    assert Deadline(DeadlineReference.TIME_OF_DAY("07:00")).describe() == (
        "07:00:00 on the day the data interval ends"
    )
    assert DAG("d", deadline=timedelta(minutes=5)).deadline.describe() == "scheduled time + 0:05:00"
