"""DAG-run deadlines: the time by which a run must have finished.

A `Deadline` is a reference point of the run plus an interval, as in Airflow 3.1's
`DeadlineAlert` (without the callback: misses go to the DAG's `sla_miss_callback` and
to the alert routes)::

    from datetime import timedelta
    from engine import DAG, Deadline, DeadlineReference

    # 30 minutes after the run was queued (created, or triggered by hand)
    DAG(..., deadline=Deadline(DeadlineReference.DAGRUN_QUEUED_AT, timedelta(minutes=30)))

    # 07:00 in the DAG's timezone, on the day the run's data interval ends
    DAG(..., deadline=Deadline(DeadlineReference.TIME_OF_DAY("07:00")))
    # ... or 07:00 the day after: the interval is added to the time of day
    DAG(..., deadline=Deadline(DeadlineReference.TIME_OF_DAY("07:00"), timedelta(days=1)))

    # 1.5 x the mean duration of the last 10 successful runs, counted from the queued time
    DAG(..., deadline=Deadline(DeadlineReference.DAGRUN_QUEUED_AT,
                               Deadline.recent_runs(n=10, factor=1.5)))

    # shorthand: 2 hours after the run's scheduled time (see DAGRUN_SCHEDULED_TIME)
    DAG(..., deadline=timedelta(hours=2))

The scheduler checks deadlines on the clock: a run still queued or running when its
deadline passes is a miss at that moment, not when it finally ends. Backfill runs are
not checked (their scheduled times are in the past by design).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Protocol

from engine.exceptions import DagDefinitionError
from engine.sdk.schedules import coerce_utc, localize

#: The run types whose deadlines and SLAs are checked.
CHECKED_RUN_TYPES = frozenset({"scheduled", "manual"})
_TIME_OF_DAY = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


class RunTimes(Protocol):
    """The columns of a DAG run a deadline is computed from."""

    @property
    def run_type(self) -> str: ...

    @property
    def logical_date(self) -> dt.datetime: ...

    @property
    def data_interval_end(self) -> dt.datetime | None: ...

    @property
    def queued_at(self) -> dt.datetime | None: ...


def scheduled_time(run: RunTimes) -> dt.datetime:
    """When a run was due: its data interval's end, or its queued time for a manual run.

    Task `sla=` counts from here, as does `deadline=timedelta(...)`.
    """
    if run.run_type == "scheduled":
        return run.data_interval_end or run.logical_date
    return run.queued_at or run.logical_date


@dataclass(frozen=True)
class Reference:
    """A point in a run's life a deadline counts from; see `DeadlineReference`."""

    kind: str
    #: the wall-clock time of a TIME_OF_DAY reference
    at: dt.time | None = None

    def resolve(self, run: RunTimes, timezone: Any) -> dt.datetime:
        """This reference for `run`, as an aware UTC datetime."""
        if self.kind == "logical_date":
            return run.logical_date
        if self.kind == "data_interval_end":
            return run.data_interval_end or run.logical_date
        if self.kind == "queued_at":
            return run.queued_at or run.logical_date
        if self.kind == "scheduled_time":
            return scheduled_time(run)
        assert self.at is not None  # time_of_day
        day = coerce_utc(run.data_interval_end or run.logical_date).in_timezone(timezone).date()
        return localize(dt.datetime.combine(day, self.at), timezone)

    def describe(self) -> str:
        if self.at is not None:
            return f"{self.at.isoformat()} on the day the data interval ends"
        return self.kind.replace("_", " ")


class DeadlineReference:
    """The reference points a `Deadline` may count from.

    - `DAGRUN_LOGICAL_DATE`: the run's logical date (Airflow's name).
    - `DAGRUN_DATA_INTERVAL_END`: the end of the run's data interval (for a manual run,
      its logical date).
    - `DAGRUN_QUEUED_AT`: when the run was created or triggered (Airflow's name).
    - `DAGRUN_SCHEDULED_TIME`: the data interval's end for scheduled runs, the queued time
      for manual runs; what task `sla=` and `deadline=timedelta(...)` count from.
    - `TIME_OF_DAY("07:00")`: that wall-clock time in the DAG's timezone, on the day the
      run's data interval ends (a daily run of Monday's data, ending Tuesday 00:00, must
      be done by Tuesday 07:00).
    """

    DAGRUN_LOGICAL_DATE = Reference("logical_date")
    DAGRUN_DATA_INTERVAL_END = Reference("data_interval_end")
    DAGRUN_QUEUED_AT = Reference("queued_at")
    DAGRUN_SCHEDULED_TIME = Reference("scheduled_time")

    @staticmethod
    def TIME_OF_DAY(at: str | dt.time) -> Reference:  # named like the constants around it
        """A wall-clock time, "HH:MM" or "HH:MM:SS" or a naive `datetime.time`."""
        return Reference("time_of_day", _parse_time_of_day(at))


_KINDS = frozenset({"logical_date", "data_interval_end", "queued_at", "scheduled_time"})


def _parse_time_of_day(value: Any) -> dt.time:
    if isinstance(value, dt.time):
        if value.tzinfo is not None:
            raise DagDefinitionError(
                f"deadline time of day {value!r} must be naive: it is read in the DAG's timezone"
            )
        return value
    match = _TIME_OF_DAY.match(value) if isinstance(value, str) else None
    if match is not None:
        hour, minute, second = (int(part or 0) for part in match.groups())
        if hour < 24 and minute < 60 and second < 60:
            return dt.time(hour, minute, second)
    raise DagDefinitionError(
        f"deadline time of day {value!r} is invalid: use 'HH:MM' or 'HH:MM:SS' (00:00-23:59:59)"
        " or a datetime.time"
    )


@dataclass(frozen=True)
class RecentRuns:
    """An interval learned from history: `factor` x the mean duration (start to end) of the
    DAG's last `n` successful runs; no deadline until `min_runs` of them exist."""

    n: int = 10
    factor: float = 1.5
    min_runs: int = 3

    def interval(self, durations: list[float]) -> dt.timedelta | None:
        """The interval for these durations (seconds, newest first), or None if too few."""
        recent = durations[: self.n]
        if len(recent) < self.min_runs:
            return None
        return dt.timedelta(seconds=self.factor * sum(recent) / len(recent))


@dataclass(frozen=True, init=False)
class Deadline:
    """When a DAG run must be finished: `reference` + `interval`.

    `interval` is a non-negative timedelta (required except for TIME_OF_DAY, where it
    defaults to zero and shifts the time, e.g. `timedelta(days=1)` for the next day), or
    `Deadline.recent_runs(n, factor)` to learn it from the DAG's recent successful runs.
    """

    reference: Reference
    interval: dt.timedelta | RecentRuns

    def __init__(
        self, reference: Reference, interval: dt.timedelta | RecentRuns | None = None
    ) -> None:
        if not isinstance(reference, Reference):
            raise DagDefinitionError(
                f"deadline reference must be one of DeadlineReference.DAGRUN_LOGICAL_DATE, "
                f"DAGRUN_DATA_INTERVAL_END, DAGRUN_QUEUED_AT, DAGRUN_SCHEDULED_TIME or "
                f"TIME_OF_DAY('HH:MM'), not {reference!r}"
            )
        fixed = reference.kind == "time_of_day"
        if interval is None and fixed:
            interval = dt.timedelta(0)
        if isinstance(interval, RecentRuns):
            if fixed:
                raise DagDefinitionError(
                    "a deadline at a time of day cannot learn its interval from recent runs"
                )
        elif not isinstance(interval, dt.timedelta):
            raise DagDefinitionError(
                f"deadline interval must be a timedelta or Deadline.recent_runs(...), "
                f"not {interval!r}"
            )
        elif interval < dt.timedelta(0) or (interval == dt.timedelta(0) and not fixed):
            raise DagDefinitionError(
                f"deadline interval must be positive (0 is allowed only after a time of day), "
                f"not {interval}"
            )
        object.__setattr__(self, "reference", reference)
        object.__setattr__(self, "interval", interval)

    @staticmethod
    def recent_runs(n: int = 10, factor: float = 1.5, min_runs: int | None = None) -> RecentRuns:
        """An interval of `factor` x the mean duration of the last `n` successful runs.

        Until `min_runs` (default: 3, or `n` if smaller) successful runs exist, the DAG's
        runs have no deadline.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DagDefinitionError(f"recent_runs(n=...) must be an integer >= 1, not {n!r}")
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor <= 0:
            raise DagDefinitionError(f"recent_runs(factor=...) must be > 0, not {factor!r}")
        min_runs = min(3, n) if min_runs is None else min_runs
        if isinstance(min_runs, bool) or not isinstance(min_runs, int) or not 1 <= min_runs <= n:
            raise DagDefinitionError(
                f"recent_runs(min_runs=...) must be an integer from 1 to n ({n}), not {min_runs!r}"
            )
        return RecentRuns(n, float(factor), min_runs)

    @property
    def learned(self) -> RecentRuns | None:
        """The history-based interval, if this deadline has one."""
        return self.interval if isinstance(self.interval, RecentRuns) else None

    def deadline_for(
        self, run: RunTimes, timezone: Any, durations: list[float] | None = None
    ) -> dt.datetime | None:
        """When `run` must be finished; None when no deadline applies to it.

        `durations`: the DAG's recent successful run durations in seconds, newest first
        (only read by a `recent_runs` interval).
        """
        if run.run_type not in CHECKED_RUN_TYPES:
            return None
        interval = self.interval
        if isinstance(interval, RecentRuns):
            learned = interval.interval(durations or [])
            if learned is None:
                return None
            interval = learned
        return self.reference.resolve(run, timezone) + interval

    def describe(self) -> str:
        if isinstance(self.interval, RecentRuns):
            r = self.interval
            return (
                f"{self.reference.describe()} + {r.factor:g} x the mean of the last {r.n} "
                "successful runs"
            )
        if self.interval:
            return f"{self.reference.describe()} + {self.interval}"
        return self.reference.describe()

    # -- serialized form -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        interval, learned = self.interval, self.learned
        return {
            "reference": self.reference.kind,
            "time_of_day": self.reference.at.isoformat() if self.reference.at else None,
            "interval": interval.total_seconds() if isinstance(interval, dt.timedelta) else None,
            "recent_runs": (
                {"n": learned.n, "factor": learned.factor, "min_runs": learned.min_runs}
                if learned
                else None
            ),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Deadline:
        kind = data["reference"]
        if kind == "time_of_day":
            reference = DeadlineReference.TIME_OF_DAY(data["time_of_day"])
        elif kind in _KINDS:
            reference = Reference(kind)
        else:
            raise DagDefinitionError(f"unknown deadline reference {kind!r}")
        learned = data.get("recent_runs")
        if learned is not None:
            return cls(reference, RecentRuns(learned["n"], learned["factor"], learned["min_runs"]))
        return cls(reference, dt.timedelta(seconds=data["interval"]))


def coerce_deadline(value: Any, where: str) -> Deadline | None:
    """The `deadline=` argument of a DAG: None, a Deadline, or a timedelta (shorthand for
    `Deadline(DeadlineReference.DAGRUN_SCHEDULED_TIME, value)`)."""
    if value is None or isinstance(value, Deadline):
        return value
    if isinstance(value, dt.timedelta):
        if value <= dt.timedelta(0):
            raise DagDefinitionError(f"{where}: deadline must be a positive timedelta, not {value}")
        return Deadline(DeadlineReference.DAGRUN_SCHEDULED_TIME, value)
    raise DagDefinitionError(
        f"{where}: deadline must be a timedelta or a Deadline(reference, interval), not {value!r}"
    )
