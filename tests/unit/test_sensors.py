"""Sensors, driven by a fake clock so no test waits."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine import DAG, BaseSensorOperator, PythonSensor
from engine.exceptions import DagDefinitionError, SensorTimeout, SkipTask
from engine.sensors import PokeReturnValue


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def drive(sensor: BaseSensorOperator) -> FakeClock:
    clock = FakeClock()
    sensor._sleep = clock.sleep
    sensor._monotonic = clock.monotonic
    return clock


def poker(results):
    """A callable returning the given results in turn, recording each call."""
    calls: list[int] = []

    def poke():
        calls.append(len(calls))
        return results[min(len(calls) - 1, len(results) - 1)]

    return poke, calls


def test_succeeds_once_the_condition_holds():
    poke, calls = poker([False, False, True])
    sensor = PythonSensor(task_id="wait", python_callable=poke, poke_interval=30)
    clock = drive(sensor)
    assert sensor.execute({}) is None
    assert len(calls) == 3
    assert clock.sleeps == [30, 30]


def test_poke_return_value_hands_a_value_to_xcom():
    poke, _ = poker([PokeReturnValue(False), PokeReturnValue(True, {"rows": 3})])
    sensor = PythonSensor(task_id="wait", python_callable=poke, poke_interval=1)
    drive(sensor)
    assert sensor.execute({}) == {"rows": 3}


def test_timeout_raises_sensor_timeout_after_a_final_poke_at_the_deadline():
    poke, calls = poker([False])
    sensor = PythonSensor(task_id="wait", python_callable=poke, poke_interval=3, timeout=10)
    clock = drive(sensor)
    with pytest.raises(
        SensorTimeout, match="task 'wait': Sensor has timed out; run duration of 10"
    ):
        sensor.execute({})
    assert clock.sleeps == [3, 3, 3, 1]  # pokes at 0, 3, 6, 9 and 10
    assert len(calls) == 5


def test_soft_fail_skips_instead():
    poke, _ = poker([False])
    sensor = PythonSensor(
        task_id="wait",
        python_callable=poke,
        poke_interval=5,
        timeout=timedelta(seconds=12),
        soft_fail=True,
    )
    clock = drive(sensor)
    with pytest.raises(SkipTask, match="timed out"):
        sensor.execute({})
    assert clock.now - 1000.0 == 12


def test_exponential_backoff_doubles_up_to_max_wait():
    poke, _ = poker([False, False, False, False, False, True])
    sensor = PythonSensor(
        task_id="wait",
        python_callable=poke,
        poke_interval=1,
        exponential_backoff=True,
        max_wait=timedelta(seconds=5),
    )
    clock = drive(sensor)
    sensor.execute({})
    assert clock.sleeps == [1, 2, 4, 5, 5]


def test_python_sensor_gets_args_and_context():
    seen = {}

    def check(path, *, ds, minimum=0):
        seen.update(path=path, ds=ds, minimum=minimum)
        return True

    sensor = PythonSensor(
        task_id="wait", python_callable=check, op_args=["/data"], op_kwargs={"minimum": 2}
    )
    drive(sensor)
    sensor.execute({"ds": "2026-01-01"})
    assert seen == {"path": "/data", "ds": "2026-01-01", "minimum": 2}


def test_custom_sensor_subclass_and_prepared_copy_keeps_the_fake_clock():
    class CountSensor(BaseSensorOperator):
        def __init__(self, *, target: int, **kwargs):
            super().__init__(**kwargs)
            self.target = target
            self.count = 0

        def poke(self, context):
            self.count += 1
            return self.count >= self.target

    with DAG("sensors", default_args={"poke_interval": 7}):
        sensor = CountSensor(task_id="count", target=3)
    assert sensor.poke_interval == 7.0  # default_args reach sensor arguments
    assert sensor.is_sensor and sensor.mode == "poke"
    clock = drive(sensor)
    run_copy = sensor.prepare_for_execution()
    run_copy.execute({})
    assert clock.sleeps == [7, 7]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"poke_interval": -1}, "poke_interval must be a number of seconds >= 0"),
        ({"timeout": "soon"}, "timeout must be"),
        ({"mode": "reschedule"}, "sensor mode 'reschedule' is not supported"),
        ({"python_callable": None}, "python_callable must be callable"),
    ],
)
def test_invalid_sensor_arguments(kwargs, message):
    arguments = {"task_id": "s", "python_callable": lambda: True, **kwargs}
    with pytest.raises(DagDefinitionError, match=message):
        PythonSensor(**arguments)


def test_base_sensor_poke_must_be_implemented():
    sensor = BaseSensorOperator(task_id="abstract")
    with pytest.raises(NotImplementedError, match="must implement poke"):
        sensor.execute({})
