"""Sensors: tasks that wait for a condition by poking it until it holds or time runs out.

The clock and sleep are instance attributes (`_monotonic`, `_sleep`) so tests can drive a
sensor with a fake clock instead of waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from engine.exceptions import DagDefinitionError, SensorTimeout, SkipTask
from engine.operators import PythonCallableOperator
from engine.tasks import BaseOperator

MODES = ("poke",)


@dataclass
class PokeReturnValue:
    """What `poke` may return to also hand a value to XCom once the condition holds."""

    is_done: bool
    xcom_value: Any = None

    def __bool__(self) -> bool:
        return self.is_done


def _seconds(value: Any, name: str, task_id: str, optional: bool = False) -> float | None:
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

    After `timeout` seconds without success the task fails with SensorTimeout, or is
    skipped when `soft_fail` is set. With `exponential_backoff` the wait doubles after
    each poke (capped by `max_wait`).
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
        self.poke_interval: float = _seconds(poke_interval, "poke_interval", task_id)  # type: ignore[assignment]
        self.timeout: float = _seconds(timeout, "timeout", task_id)  # type: ignore[assignment]
        self.max_wait = _seconds(max_wait, "max_wait", task_id, optional=True)
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
        super().__init__(**kwargs)

    def poke(self, context: Mapping[str, Any]) -> bool | PokeReturnValue:
        """Whether the condition holds now."""
        raise NotImplementedError(f"{type(self).__name__} must implement poke(self, context)")

    def _interval(self, pokes: int) -> float:
        if not self.exponential_backoff:
            return self.poke_interval
        interval = self.poke_interval * 2 ** (pokes - 1)
        return min(interval, self.max_wait) if self.max_wait is not None else interval

    def execute(self, context: Mapping[str, Any]) -> Any:
        started = self._monotonic()
        pokes = 0
        while True:
            result = self.poke(context)
            pokes += 1
            if result:
                return result.xcom_value if isinstance(result, PokeReturnValue) else None
            elapsed = self._monotonic() - started
            if elapsed >= self.timeout:
                message = (
                    f"Sensor has timed out; run duration of {elapsed:g} seconds is beyond the "
                    f"specified timeout of {self.timeout:g}."
                )
                if self.soft_fail:
                    raise SkipTask(message)
                raise SensorTimeout(f"task {self.task_id!r}: {message}")
            # never sleep past the deadline, so the last poke happens at the timeout
            self._sleep(min(self._interval(pokes), self.timeout - elapsed))


class PythonSensor(PythonCallableOperator, BaseSensorOperator):
    """Pokes by calling `python_callable`; a truthy result (or PokeReturnValue) ends the wait."""

    def poke(self, context: Mapping[str, Any]) -> bool | PokeReturnValue:
        result = self.call_callable(context)
        return result if isinstance(result, PokeReturnValue) else bool(result)
