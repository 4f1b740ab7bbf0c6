"""Schedules: which data interval a DAG's next run covers, and when it may be created.

Semantics are Airflow's: a scheduled run's logical date is its data interval's start, and
the run is created once the interval has ended (`DataInterval.run_after`). Cron
expressions are evaluated in the DAG's timezone with Airflow's DST handling, so a daily
schedule stays at local midnight across DST changes (intervals of 23 or 25 hours).
Every datetime returned is an aware pendulum DateTime in UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pendulum
from pendulum import DateTime

from engine.exceptions import DagDefinitionError

UTC = pendulum.UTC
PRESETS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_OFFSET = re.compile(r"^([+-])(\d\d):(\d\d)$")
#: The timezone of naive dates in DAG files (`core.default_timezone`, set when a process
#: is configured and passed to the processes that parse DAG files).
_default_timezone: Any = UTC


def set_default_timezone(name: str) -> None:
    """Take naive `start_date`/`end_date` values, and the schedules of DAGs without an
    aware start date, in timezone `name` (an IANA name or an offset like +05:30)."""
    global _default_timezone
    _default_timezone = parse_timezone(name)


def default_timezone() -> Any:
    """The timezone of naive dates in DAG files (UTC unless configured)."""
    return _default_timezone


def coerce_dag_date(value: dt.datetime) -> DateTime:
    """A DAG's start or end date as UTC: a naive one is a wall-clock time in the default
    timezone (`core.default_timezone`), as in Airflow."""
    if isinstance(value, dt.datetime) and (value.tzinfo is None or value.utcoffset() is None):
        return localize(value.replace(tzinfo=None), _default_timezone)
    return coerce_utc(value)


def coerce_utc(value: dt.datetime) -> DateTime:
    """An aware pendulum DateTime in UTC; naive datetimes are taken as UTC."""
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}: {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=dt.UTC)
    return pendulum.instance(value.astimezone(dt.UTC)).in_timezone(UTC)


def timezone_of(value: dt.datetime | None) -> Any:
    """The pendulum timezone of an aware datetime; the default timezone (UTC unless
    `core.default_timezone` says otherwise) for naive values or None."""
    if value is None or value.tzinfo is None or value.utcoffset() is None:
        return _default_timezone
    return pendulum.instance(value).tz or UTC


def timezone_name(tz: Any) -> str:
    """A name `parse_timezone` turns back into the same timezone."""
    if isinstance(tz, pendulum.FixedTimezone):
        total = int(tz.offset)
        sign = "-" if total < 0 else "+"
        hours, rest = divmod(abs(total), 3600)
        return f"{sign}{hours:02d}:{rest // 60:02d}"
    return str(getattr(tz, "name", None) or getattr(tz, "key", None) or tz)


def parse_timezone(name: str) -> Any:
    match = _OFFSET.match(name)
    if match:
        sign = -1 if match.group(1) == "-" else 1
        seconds = int(match.group(2)) * 3600 + int(match.group(3)) * 60
        return pendulum.FixedTimezone(sign * seconds)
    return pendulum.timezone(name)


def localize(naive: dt.datetime, tz: Any) -> DateTime:
    """A local wall-clock time in `tz`, as UTC, resolving DST like Airflow (pendulum).

    A time skipped by a DST change moves forward (02:30 -> 03:30); a repeated time
    means its second occurrence.
    """
    first, second = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    in_gap = (second.utcoffset() or dt.timedelta()) > (first.utcoffset() or dt.timedelta())
    return coerce_utc(first if in_gap else second)


def _naive_local(value: DateTime, tz: Any) -> dt.datetime:
    return value.astimezone(tz).replace(tzinfo=None, fold=0)


@dataclass(frozen=True)
class DataInterval:
    """The period a run covers; the run may be created at `run_after`."""

    start: DateTime
    end: DateTime

    @classmethod
    def exact(cls, at: dt.datetime) -> DataInterval:
        at = coerce_utc(at)
        return cls(at, at)

    @property
    def run_after(self) -> DateTime:
        return self.end


class Timetable:
    """Base of all schedules."""

    kind = ""
    summary = ""
    #: False for schedules that never create runs by themselves (schedule=None).
    periodic = True

    def next_dagrun_info(
        self,
        last_data_interval_end: dt.datetime | None = None,
        start_date: dt.datetime | None = None,
        end_date: dt.datetime | None = None,
        catchup: bool = False,
        now: dt.datetime | None = None,
    ) -> DataInterval | None:
        """The next run's data interval after the last scheduled one, or None for no more.

        The interval may end in the future: create the run once `run_after <= now`.
        """
        raise NotImplementedError

    def infer_manual_data_interval(self, logical_date: dt.datetime) -> DataInterval:
        """A manually triggered run covers just its logical date (start == end)."""
        return DataInterval.exact(logical_date)

    def serialize(self) -> dict[str, Any]:
        return {"type": self.kind}

    @staticmethod
    def deserialize(data: dict[str, Any]) -> Timetable:
        kind = data.get("type")
        if kind == "null":
            return NullTimetable()
        if kind == "once":
            return OnceTimetable()
        if kind == "cron":
            tz = parse_timezone(data.get("timezone", "UTC"))
            return CronTimetable(data["expression"], tz, summary=data.get("summary"))
        if kind == "delta":
            return DeltaTimetable(dt.timedelta(seconds=data["seconds"]))
        raise ValueError(f"unknown timetable type {kind!r}")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.serialize() == self.serialize()

    def __hash__(self) -> int:
        return hash(repr(sorted(self.serialize().items())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.summary!r})"


class NullTimetable(Timetable):
    """schedule=None: runs only when triggered."""

    kind = "null"
    summary = "None"
    periodic = False

    def next_dagrun_info(self, *args: Any, **kwargs: Any) -> DataInterval | None:
        return None


class OnceTimetable(Timetable):
    """ "@once": a single run at start_date, whatever catchup says (as in Airflow)."""

    kind = "once"
    summary = "@once"

    def next_dagrun_info(
        self,
        last_data_interval_end: dt.datetime | None = None,
        start_date: dt.datetime | None = None,
        end_date: dt.datetime | None = None,
        catchup: bool = False,
        now: dt.datetime | None = None,
    ) -> DataInterval | None:
        if last_data_interval_end is not None or start_date is None:
            return None
        if end_date is not None and coerce_utc(start_date) > coerce_utc(end_date):
            return None
        return DataInterval.exact(start_date)


class _IntervalTimetable(Timetable):
    """Shared logic of cron and timedelta schedules (Airflow's _DataIntervalTimetable)."""

    def _get_next(self, current: DateTime) -> DateTime:
        raise NotImplementedError

    def _get_prev(self, current: DateTime) -> DateTime:
        raise NotImplementedError

    def _align_to_next(self, current: DateTime) -> DateTime:
        return current

    def _align_to_prev(self, current: DateTime) -> DateTime:
        return current

    def _skip_to_latest(self, earliest: DateTime | None, now: DateTime) -> DateTime:
        raise NotImplementedError

    def next_dagrun_info(
        self,
        last_data_interval_end: dt.datetime | None = None,
        start_date: dt.datetime | None = None,
        end_date: dt.datetime | None = None,
        catchup: bool = False,
        now: dt.datetime | None = None,
    ) -> DataInterval | None:
        now = coerce_utc(now) if now is not None else pendulum.now(UTC)
        start = coerce_utc(start_date) if start_date is not None else None
        if not catchup:
            earliest: DateTime | None = self._skip_to_latest(start, now)
        else:
            earliest = self._align_to_next(start) if start is not None else None
        if last_data_interval_end is None:
            if earliest is None:
                return None
            begin = earliest
        else:
            begin = self._align_to_prev(coerce_utc(last_data_interval_end))
            if earliest is not None:
                begin = max(begin, earliest)
        if end_date is not None and begin > coerce_utc(end_date):
            return None
        return DataInterval(begin, self._get_next(begin))


class CronTimetable(_IntervalTimetable):
    """A cron expression (or preset) evaluated in a timezone."""

    kind = "cron"

    def __init__(self, expression: str, timezone: Any = UTC, summary: str | None = None):
        self.expression = PRESETS.get(expression, expression)
        self.timezone = timezone
        self.summary = summary or expression

    def serialize(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "expression": self.expression,
            "timezone": timezone_name(self.timezone),
            "summary": self.summary,
        }

    @cached_property
    def _fixed_time(self) -> bool:
        """Whether runs happen at one wall-clock time (then no DST fix is applied)."""
        from croniter import croniter

        cron = croniter(self.expression, dt.datetime(2000, 1, 1))
        first, second = cron.get_next(dt.datetime), cron.get_next(dt.datetime)
        return (first.hour, first.minute) == (second.hour, second.minute)

    def _step(self, current: DateTime, forward: bool) -> DateTime:
        from croniter import croniter

        naive = _naive_local(current, self.timezone)
        cron = croniter(self.expression, naive)
        scheduled = cron.get_next(dt.datetime) if forward else cron.get_prev(dt.datetime)
        if self._fixed_time:
            return localize(scheduled, self.timezone)
        return coerce_utc(current + (scheduled - naive))

    def _get_next(self, current: DateTime) -> DateTime:
        return self._step(current, forward=True)

    def _get_prev(self, current: DateTime) -> DateTime:
        return self._step(current, forward=False)

    def _align_to_next(self, current: DateTime) -> DateTime:
        following = self._get_next(current)
        return following if self._get_prev(following) != current else current

    def _align_to_prev(self, current: DateTime) -> DateTime:
        previous = self._get_prev(current)
        return previous if self._get_next(previous) != current else current

    def _skip_to_latest(self, earliest: DateTime | None, now: DateTime) -> DateTime:
        """The start of the latest interval that has ended by `now`."""
        last_start = self._get_prev(now)
        if self._get_next(last_start) == now:
            new_start = last_start
        else:
            new_start = self._get_prev(last_start)
        if earliest is None:
            return new_start
        return max(new_start, self._align_to_next(earliest))


class DeltaTimetable(_IntervalTimetable):
    """Back-to-back intervals of a fixed length, starting at start_date."""

    kind = "delta"

    def __init__(self, delta: dt.timedelta):
        self.delta = dt.timedelta(seconds=delta.total_seconds())
        self.summary = str(self.delta)

    def serialize(self) -> dict[str, Any]:
        return {"type": self.kind, "seconds": self.delta.total_seconds()}

    def _get_next(self, current: DateTime) -> DateTime:
        return coerce_utc(current + self.delta)

    def _get_prev(self, current: DateTime) -> DateTime:
        return coerce_utc(current - self.delta)

    def _skip_to_latest(self, earliest: DateTime | None, now: DateTime) -> DateTime:
        """The latest complete interval on the start_date grid (Airflow: now - delta)."""
        if earliest is None:
            return self._get_prev(now)
        complete = int((now - earliest).total_seconds() // self.delta.total_seconds())
        if complete < 1:
            return earliest
        return coerce_utc(earliest + self.delta * (complete - 1))


def timetable_from_schedule(
    schedule: Any, timezone: Any = UTC, dag_id: str | None = None
) -> Timetable:
    """Turn a DAG's `schedule` argument into a Timetable, or raise naming the DAG."""
    where = f"DAG {dag_id!r}: " if dag_id else ""
    if schedule is None:
        return NullTimetable()
    if isinstance(schedule, Timetable):
        return schedule
    if isinstance(schedule, str):
        return _cron_or_preset(schedule, timezone, where)
    if isinstance(schedule, dt.timedelta):
        if getattr(schedule, "months", 0) or getattr(schedule, "years", 0):
            raise DagDefinitionError(
                f"{where}schedule {schedule!r} has months or years, which have no fixed "
                "length; use a cron expression such as '@monthly'"
            )
        if schedule.total_seconds() <= 0:
            raise DagDefinitionError(f"{where}schedule {schedule!r} must be a positive duration")
        return DeltaTimetable(schedule)
    raise DagDefinitionError(
        f"{where}schedule must be None, '@once', a preset such as '@daily', a cron "
        f"expression or a timedelta, not {type(schedule).__name__}: {schedule!r}"
    )


def _cron_or_preset(schedule: str, timezone: Any, where: str) -> Timetable:
    if schedule == "@once":
        return OnceTimetable()
    expression = PRESETS.get(schedule.strip(), schedule.strip())
    problem = None
    if expression.startswith("@"):
        problem = f"unknown preset; known: @once, {', '.join(PRESETS)}"
    elif len(expression.split()) != 5:
        problem = "a cron expression has 5 fields (minute hour day-of-month month day-of-week)"
    else:
        from croniter import croniter

        try:
            croniter(expression)
        except (ValueError, KeyError) as exc:
            problem = str(exc)
    if problem:
        raise DagDefinitionError(f"{where}invalid schedule {schedule!r}: {problem}")
    return CronTimetable(expression, timezone, summary=schedule.strip())


#: a timedelta's text, as `str(timedelta)` writes it (the summary a delta schedule keeps)
_DELTA_TEXT = re.compile(r"^(?:(\d+) days?, )?(\d+):(\d\d):(\d\d)(?:\.\d+)?$")


def describe_schedule(summary: str | None) -> str:
    """A schedule the way people read it: `every 6h`, `every 1d 2h`, or the cron/preset as is.

    Delta schedules keep `str(timedelta)` as their summary (`6:00:00`, `1 day, 2:00:00`);
    anything else (a cron expression, a preset, None) is returned unchanged.
    """
    if not summary:
        return "None"
    match = _DELTA_TEXT.match(summary.strip())
    if match is None:
        return summary
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    parts = [
        f"{value}{unit}"
        for value, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s"))
        if value
    ]
    return "every " + (" ".join(parts) or "0s")
