"""Sensors, driven by a fake clock so no test waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from engine import DAG, BaseSensorOperator, DateTimeSensor, PythonSensor
from engine.exceptions import (
    DagDefinitionError,
    FailTaskNoRetry,
    RescheduleTask,
    SensorTimeout,
    SkipTask,
)
from engine.execution.runner import _failure_state
from engine.parsing.serialization import serialize_dag
from engine.sdk.sensors import PokeReturnValue
from engine.states import TaskState


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
        ({"mode": "smart"}, "sensor mode 'smart' is not supported; allowed: poke, reschedule"),
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


# -- reschedule mode: one poke per attempt, the try's clock and count from `ti` ------------

T = datetime(2026, 3, 2, 12, tzinfo=UTC)


def rescheduling(poke, **kwargs) -> tuple[PythonSensor, FakeClock]:
    """A reschedule-mode sensor whose wall clock reads T and must never sleep."""
    sensor = PythonSensor(task_id="wait", python_callable=poke, mode="reschedule", **kwargs)
    clock = drive(sensor)
    sensor._now = lambda: T
    return sensor, clock


def try_context(first_poke: datetime, reschedules: int = 0) -> dict:
    """The context of one poke: `ti` says when the try began and how often it was rescheduled."""
    return {"ti": SimpleNamespace(start_date=first_poke, reschedule_count=reschedules)}


def test_reschedule_mode_pokes_once_then_asks_for_the_next_poke_without_sleeping():
    poke, calls = poker([False])
    sensor, clock = rescheduling(poke, poke_interval=30)
    with pytest.raises(RescheduleTask) as raised:
        sensor.execute(try_context(T))
    assert raised.value.reschedule_date == T + timedelta(seconds=30)
    assert len(calls) == 1
    assert clock.sleeps == []  # the slot is given back, not slept in


def test_reschedule_mode_returns_the_poke_value_once_the_condition_holds():
    poke, calls = poker([PokeReturnValue(True, {"rows": 3})])
    sensor, _ = rescheduling(poke, poke_interval=30)
    assert sensor.execute(try_context(T - timedelta(hours=1), reschedules=120)) == {"rows": 3}
    assert len(calls) == 1


def test_reschedule_mode_times_out_from_the_first_poke_of_the_try():
    poke, _ = poker([False])
    sensor, _ = rescheduling(poke, poke_interval=30, timeout=100)
    # 95 s after the first poke: the next poke is moved to the deadline, not 30 s later
    with pytest.raises(RescheduleTask) as raised:
        sensor.execute(try_context(T - timedelta(seconds=95), reschedules=3))
    assert raised.value.reschedule_date == T + timedelta(seconds=5)
    with pytest.raises(
        SensorTimeout, match="task 'wait': Sensor has timed out; run duration of 100"
    ):
        sensor.execute(try_context(T - timedelta(seconds=100), reschedules=4))
    soft, _ = rescheduling(poke, poke_interval=30, timeout=100, soft_fail=True)
    with pytest.raises(SkipTask, match="timed out"):
        soft.execute(try_context(T - timedelta(seconds=130), reschedules=4))


def test_reschedule_mode_backs_off_by_the_pokes_of_the_try():
    poke, _ = poker([False])
    sensor, _ = rescheduling(
        poke, poke_interval=1, exponential_backoff=True, max_wait=timedelta(seconds=5)
    )
    waits = []
    for reschedules in range(5):
        with pytest.raises(RescheduleTask) as raised:
            sensor.execute(try_context(T, reschedules))
        waits.append((raised.value.reschedule_date - T).total_seconds())
    assert waits == [1, 2, 4, 5, 5]  # as poke mode's sleeps: one count across attempts


def test_reschedule_mode_without_a_try_starts_its_clock_at_this_poke():
    poke, _ = poker([False])
    sensor, _ = rescheduling(poke, poke_interval=10, timeout=0)
    with pytest.raises(SensorTimeout):
        sensor.execute({})


def test_a_time_sensor_in_reschedule_mode_pokes_again_right_at_its_target():
    sensor = DateTimeSensor(
        task_id="nine", target_time=T + timedelta(seconds=10), poke_interval=60, mode="reschedule"
    )
    sensor._now = lambda: T
    with pytest.raises(RescheduleTask) as raised:
        sensor.execute(try_context(T))
    assert raised.value.reschedule_date == T + timedelta(seconds=10.001)


def test_the_mode_is_serialized_for_the_scheduler():
    with DAG("modes", schedule=None) as dag:
        PythonSensor(task_id="poking", python_callable=bool)
        PythonSensor(task_id="rescheduling", python_callable=bool, mode="reschedule")
    modes = {task["task_id"]: task["sensor"]["mode"] for task in serialize_dag(dag)["tasks"]}
    assert modes == {"poking": "poke", "rescheduling": "reschedule"}


def test_a_sensor_timeout_fails_without_using_retries():
    """As Airflow: another try of a timed-out sensor would only wait again (both modes)."""
    row = SimpleNamespace(try_number=1, max_tries=3)
    assert issubclass(SensorTimeout, FailTaskNoRetry)
    assert _failure_state(SensorTimeout("late"), row) is TaskState.FAILED
    assert _failure_state(ConnectionError("flaky"), row) is TaskState.UP_FOR_RETRY
