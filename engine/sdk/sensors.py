"""Sensors: tasks that wait for a condition by poking it until it holds or time runs out.

Two modes, as in Airflow. `poke` sleeps between pokes inside one attempt, holding its
worker and pool slot all along. `reschedule` pokes once per attempt and, while the
condition does not hold, ends the attempt with RescheduleTask: the task instance waits in
up_for_reschedule, holding nothing, until the scheduler runs it again. The runner keeps
every poke of a try in that try (`ti.start_date` is its first poke, `ti.reschedule_count`
how often it was rescheduled), so `timeout` and the backoff count across reschedules.

The clocks and sleep are instance attributes (`_monotonic`, `_now`, `_sleep`) so tests can
drive a sensor with a fake clock instead of waiting.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, overload

from engine.exceptions import (
    DagDefinitionError,
    RescheduleTask,
    SensorTimeout,
    SkipTask,
    TaskError,
)
from engine.sdk.operators import PythonCallableOperator
from engine.sdk.schedules import coerce_utc
from engine.sdk.tasks import BaseOperator

log = logging.getLogger("engine.task")

#: `poke` holds a slot while it waits; `reschedule` gives it back between pokes.
MODES = ("poke", "reschedule")


@dataclass
class PokeReturnValue:
    """What `poke` may return to also hand a value to XCom once the condition holds."""

    is_done: bool
    xcom_value: Any = None

    def __bool__(self) -> bool:
        return self.is_done


def _utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def seconds_argument(
    value: Any, name: str, task_id: str, optional: Literal[False] = False
) -> float: ...


@overload
def seconds_argument(value: Any, name: str, task_id: str, optional: bool) -> float | None: ...


def seconds_argument(value: Any, name: str, task_id: str, optional: bool = False) -> float | None:
    """A waiting argument (seconds or a timedelta) as seconds, or a definition error naming
    the task and the argument; shared by every operator that polls."""
    if value is None and optional:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise DagDefinitionError(
            f"task {task_id!r}: {name} must be a number of seconds >= 0 or a timedelta, "
            f"not {value!r}"
        )
    return float(value)


class BaseSensorOperator(BaseOperator):
    """Calls `poke(context)` every `poke_interval` seconds until it returns a truthy value.

    After `timeout` seconds without success the task fails with SensorTimeout (without
    retrying), or is skipped when `soft_fail` is set. With `exponential_backoff` the wait
    doubles after each poke (capped by `max_wait`). `mode="reschedule"` frees the worker
    and pool slot between pokes; `timeout` then counts from the first poke of the try.
    """

    is_sensor = True

    def __init__(
        self,
        *,
        poke_interval: float | timedelta = 60,
        timeout: float | timedelta = 7 * 24 * 60 * 60,
        soft_fail: bool = False,
        mode: str = "poke",
        exponential_backoff: bool = False,
        max_wait: float | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id", "?")
        self.poke_interval = seconds_argument(poke_interval, "poke_interval", task_id)
        self.timeout = seconds_argument(timeout, "timeout", task_id)
        self.max_wait = seconds_argument(max_wait, "max_wait", task_id, optional=True)
        if mode not in MODES:
            raise DagDefinitionError(
                f"task {task_id!r}: sensor mode {mode!r} is not supported; allowed: "
                f"{', '.join(MODES)}"
            )
        self.mode = mode
        self.soft_fail = bool(soft_fail)
        self.exponential_backoff = bool(exponential_backoff)
        self._sleep: Callable[[float], Any] = time.sleep
        self._monotonic: Callable[[], float] = time.monotonic
        self._now: Callable[[], datetime] = _utcnow
        super().__init__(**kwargs)

    def poke(self, context: Mapping[str, Any]) -> bool | PokeReturnValue:
        """Whether the condition holds now."""
        raise NotImplementedError(f"{type(self).__name__} must implement poke(self, context)")

    def _interval(self, pokes: int) -> float:
        if not self.exponential_backoff:
            return self.poke_interval
        interval: float = self.poke_interval * 2 ** (pokes - 1)
        return min(interval, self.max_wait) if self.max_wait is not None else interval

    def _check_timeout(self, elapsed: float) -> None:
        """Raise SensorTimeout (SkipTask with soft_fail) once `timeout` has passed."""
        if elapsed < self.timeout:
            return
        message = (
            f"Sensor has timed out; run duration of {elapsed:g} seconds is beyond the "
            f"specified timeout of {self.timeout:g}."
        )
        if self.soft_fail:
            raise SkipTask(message)
        raise SensorTimeout(f"task {self.task_id!r}: {message}")

    def execute(self, context: Mapping[str, Any]) -> Any:
        if self.mode == "reschedule":
            return self._poke_once(context)
        started = self._monotonic()
        pokes = 0
        while True:
            result = self.poke(context)
            pokes += 1
            if result:
                return result.xcom_value if isinstance(result, PokeReturnValue) else None
            elapsed = self._monotonic() - started
            self._check_timeout(elapsed)
            # never sleep past the deadline, so the last poke happens at the timeout
            self._sleep(min(self._interval(pokes), self.timeout - elapsed))

    def _poke_once(self, context: Mapping[str, Any]) -> Any:
        """Reschedule mode: one poke, then done, timed out, or RescheduleTask.

        The try's first poke (`ti.start_date`) starts the timeout, and the pokes made so
        far (`ti.reschedule_count` + 1) drive the backoff, so both run across attempts.
        Wall-clock time, since the pokes of one try run in different processes.
        """
        ti = context.get("ti")
        started = getattr(ti, "start_date", None) or self._now()
        pokes = getattr(ti, "reschedule_count", 0) + 1
        result = self.poke(context)
        if result:
            return result.xcom_value if isinstance(result, PokeReturnValue) else None
        now = self._now()
        elapsed = (now - started).total_seconds()
        self._check_timeout(elapsed)
        # never wait past the deadline, so the last poke happens at the timeout
        wait = min(self._interval(pokes), self.timeout - elapsed)
        log.info("condition not met after poke %d; next poke in %g s", pokes, wait)
        raise RescheduleTask(now + timedelta(seconds=wait))


class PythonSensor(PythonCallableOperator, BaseSensorOperator):
    """Pokes by calling `python_callable`; a truthy result (or PokeReturnValue) ends the wait."""

    def poke(self, context: Mapping[str, Any]) -> bool | PokeReturnValue:
        result = self.call_callable(context)
        return result if isinstance(result, PokeReturnValue) else bool(result)


class FileSensor(BaseSensorOperator):
    """Waits for a file, or a directory holding a file, to exist (Airflow's FileSensor).

    `filepath` is templated and may be a glob pattern (`**` matches across directories
    with `recursive=True`). A relative path is joined to the `path` extra of the
    `fs_conn_id` connection (Airflow's FSHook); without a connection, to the worker's
    working directory. A matched directory counts once a file exists anywhere below it.
    """

    template_fields: Sequence[str] = ("filepath",)

    def __init__(
        self,
        *,
        filepath: str,
        fs_conn_id: str | None = None,
        recursive: bool = False,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id", "?")
        if not isinstance(filepath, str) or not filepath:
            raise DagDefinitionError(
                f"task {task_id!r}: filepath must be a non-empty string, not {filepath!r}"
            )
        if fs_conn_id is not None and (not isinstance(fs_conn_id, str) or not fs_conn_id):
            raise DagDefinitionError(
                f"task {task_id!r}: fs_conn_id must be a connection id or None, not {fs_conn_id!r}"
            )
        self.filepath = filepath
        self.fs_conn_id = fs_conn_id
        self.recursive = bool(recursive)
        super().__init__(**kwargs)

    def base_path(self) -> str:
        """The `path` extra of `fs_conn_id` ("" without a connection), like FSHook.get_path."""
        if self.fs_conn_id is None:
            return ""
        from engine.sdk.connections import Connection

        return str(Connection.get(self.fs_conn_id).extra_dejson.get("path", "") or "")

    def poke(self, context: Mapping[str, Any]) -> bool:
        if not isinstance(self.filepath, str) or not self.filepath:
            raise TaskError(f"task {self.task_id!r}: filepath rendered to {self.filepath!r}")
        full_path = os.path.join(self.base_path(), self.filepath)
        log.info("poking for file %s", full_path)
        for path in glob.glob(full_path, recursive=self.recursive):
            if os.path.isfile(path):
                log.info("found file %s", path)
                return True
            for folder, _, files in os.walk(path):
                if files:
                    log.info("found file %s in %s", os.path.join(folder, files[0]), path)
                    return True
        return False


class _TimeSensor(BaseSensorOperator):
    """Waits until a moment on the wall clock has passed; pokes no later than that moment.

    Airflow pokes every `poke_interval` and may see the moment up to one interval late;
    here the wait before a poke is also cut short at the target time.
    """

    _target: datetime | None = None

    def target(self, context: Mapping[str, Any]) -> datetime:
        """The aware moment after which the condition holds."""
        raise NotImplementedError

    def poke(self, context: Mapping[str, Any]) -> bool:
        self._target = self.target(context)
        log.info("checking if the time (%s) has come", self._target.isoformat())
        return self._now() > self._target

    def _interval(self, pokes: int) -> float:
        interval = super()._interval(pokes)
        if self._target is None:
            return interval
        # a hair past the target, since the condition is "now > target" as in Airflow
        remaining = (self._target - self._now()).total_seconds() + 0.001
        return max(0.001, min(interval, remaining))


class TimeDeltaSensor(_TimeSensor):
    """Waits until `delta` after the end of the run's data interval (Airflow's rule).

    For a daily run of 2024-01-01 (interval ending 2024-01-02 00:00) with
    `delta=timedelta(hours=2)`, it succeeds after 2024-01-02 02:00 UTC. A manual run's
    interval ends at its logical date.
    """

    def __init__(self, *, delta: timedelta, **kwargs: Any) -> None:
        if not isinstance(delta, timedelta):
            raise DagDefinitionError(
                f"task {kwargs.get('task_id', '?')!r}: delta must be a timedelta, not {delta!r}"
            )
        self.delta = delta
        super().__init__(**kwargs)

    def target(self, context: Mapping[str, Any]) -> datetime:
        end = context.get("data_interval_end") or context["logical_date"]
        return coerce_utc(end) + self.delta


def parse_target_time(value: Any, task_id: str) -> datetime:
    """An aware datetime from a datetime or an ISO 8601 string; naive means UTC."""
    if isinstance(value, datetime):
        return coerce_utc(value)
    if isinstance(value, str):
        import pendulum

        try:
            parsed = pendulum.parse(value.strip(), tz="UTC")
        except ValueError as exc:  # pendulum's ParserError is one
            raise TaskError(
                f"task {task_id!r}: target_time {value!r} is not an ISO 8601 date/time: {exc}"
            ) from None
        if isinstance(parsed, datetime):
            return coerce_utc(parsed)
    raise TaskError(
        f"task {task_id!r}: target_time must be a datetime or an ISO 8601 string, not {value!r}"
    )


class DateTimeSensor(_TimeSensor):
    """Waits until `target_time` has passed (Airflow's DateTimeSensor).

    `target_time` is templated: a datetime, or a string rendered then parsed as ISO 8601,
    such as `"{{ data_interval_end + macros.timedelta(hours=1) }}"`. A time without an
    offset is UTC.
    """

    template_fields: Sequence[str] = ("target_time",)

    def __init__(self, *, target_time: str | datetime, **kwargs: Any) -> None:
        if isinstance(target_time, datetime):
            # stored as text like Airflow, so rendering leaves it alone
            target_time = coerce_utc(target_time).isoformat()
        if not isinstance(target_time, str) or not target_time.strip():
            raise DagDefinitionError(
                f"task {kwargs.get('task_id', '?')!r}: target_time must be a datetime or a "
                f"non-empty string, not {target_time!r}"
            )
        self.target_time: Any = target_time
        super().__init__(**kwargs)

    def target(self, context: Mapping[str, Any]) -> datetime:
        return parse_target_time(self.target_time, self.task_id)
