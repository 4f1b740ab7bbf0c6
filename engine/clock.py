"""The clock the scheduler loop and its services read: one object, injected.

`now()` is the wall clock (an aware UTC datetime: what is due, what is late) and
`monotonic()` the seconds of a clock that never goes back (how long since a periodic
job last ran). Every "is it time yet" decision of the scheduler, its tick hooks and its
services reads the clock it was given; production code gets `SystemClock`, tests a
`FakeClock` they move by hand, so no test reaches into a loop's private timers.

Real time is still used to *wait* (sleeping between ticks, bounding a network call) and
to *measure* work (a tick's duration): a fake clock that nobody advances must not make a
thread sleep forever, and a duration of zero would be a lie in the metrics.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What a loop reads to decide what is due."""

    def now(self) -> datetime:
        """The current time, an aware UTC datetime."""
        ...

    def monotonic(self) -> float:
        """Seconds of a clock that never goes back (only differences mean anything)."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


#: The clock of everything not given another one.
SYSTEM = SystemClock()


class FakeClock:
    """A clock that moves only when told: `advance(seconds)` moves both readings, `set(when)`
    moves the wall clock to `when` (and the monotonic one forward by as much, never back,
    as a real wall-clock jump back leaves the monotonic clock alone). Thread-safe, since
    services read it from their own threads.

    >>> clock = FakeClock(datetime(2026, 1, 10, 12, tzinfo=UTC))
    >>> clock.advance(90)
    >>> clock.now().isoformat(), clock.monotonic()
    ('2026-01-10T12:01:30+00:00', 90.0)
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError(f"FakeClock needs an aware datetime, got {start!r}")
        self._now = start
        self._monotonic = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def advance(self, seconds: float | timedelta) -> None:
        """Move both clocks forward by `seconds` (a number or a timedelta)."""
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        if step < 0:
            raise ValueError(f"a clock advances by a positive amount, got {step} s")
        with self._lock:
            self._now += timedelta(seconds=step)
            self._monotonic += step

    def set(self, when: datetime) -> None:
        """Move the wall clock to `when`; the monotonic clock follows only forward."""
        if when.tzinfo is None:
            raise ValueError(f"FakeClock needs an aware datetime, got {when!r}")
        with self._lock:
            step = (when - self._now).total_seconds()
            self._now = when
            self._monotonic += max(0.0, step)


class Every:
    """The timer of a periodic job on a clock: due at first, then once `seconds` passed
    since it was last due; `hurry()` makes it due at the next look, whatever the time.

    >>> clock = FakeClock()
    >>> heartbeat = Every(clock, 5.0)
    >>> heartbeat.due(), heartbeat.due()
    (True, False)
    >>> clock.advance(5)
    >>> heartbeat.due()
    True
    """

    def __init__(self, clock: Clock, seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self._last: float | None = None

    def due(self) -> bool:
        """Whether the job is due now; if it is, the next wait starts now."""
        moment = self.clock.monotonic()
        if self._last is not None and moment - self._last < self.seconds:
            return False
        self._last = moment
        return True

    def hurry(self) -> None:
        """Make the job due at the next `due()`."""
        self._last = None
