"""FileSensor, TimeDeltaSensor and DateTimeSensor, driven by a fake clock so no test waits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pendulum
import pytest

from engine import DAG, DateTimeSensor, FileSensor, TimeDeltaSensor
from engine.exceptions import DagDefinitionError, SensorTimeout, SkipTask, TaskError
from engine.sdk.sensors import BaseSensorOperator, parse_target_time
from engine.sdk.templating import date_context, make_jinja_env

START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


class FakeClock:
    """Monotonic and wall clocks that move together, and only when the sensor sleeps."""

    def __init__(self, wall: datetime = START) -> None:
        self.monotonic_now = 1000.0
        self.wall = wall
        self.sleeps: list[float] = []
        self.on_sleep = lambda: None

    def monotonic(self) -> float:
        return self.monotonic_now

    def now(self) -> datetime:
        return self.wall

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.monotonic_now += seconds
        self.wall += timedelta(seconds=seconds)
        self.on_sleep()


def drive(sensor: BaseSensorOperator, clock: FakeClock | None = None) -> FakeClock:
    clock = clock or FakeClock()
    sensor._sleep = clock.sleep
    sensor._monotonic = clock.monotonic
    sensor._now = clock.now
    return clock


def run_context(logical: datetime, end: datetime | None = None) -> dict:
    return date_context(logical, logical, end)


# -- FileSensor ---------------------------------------------------------------------------


def file_sensor(path: Path | str, **kwargs) -> FileSensor:
    return FileSensor(task_id="wait", filepath=str(path), **kwargs)


def test_file_sensor_finds_a_plain_file(tmp_path):
    sensor = file_sensor(tmp_path / "data.csv")
    assert sensor.poke({}) is False
    (tmp_path / "data.csv").write_text("x")
    assert sensor.poke({}) is True


def test_file_sensor_glob_patterns(tmp_path):
    sensor = file_sensor(tmp_path / "in" / "part-*.csv")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part-1.txt").write_text("x")
    assert sensor.poke({}) is False
    (tmp_path / "in" / "part-1.csv").write_text("x")
    assert sensor.poke({}) is True


def test_a_directory_counts_once_a_file_exists_anywhere_below_it(tmp_path):
    folder = tmp_path / "drop"
    sensor = file_sensor(folder)
    assert sensor.poke({}) is False  # missing
    (folder / "empty" / "deeper").mkdir(parents=True)
    assert sensor.poke({}) is False  # only empty directories: not yet (as in Airflow)
    (folder / "empty" / "deeper" / "_SUCCESS").write_text("")
    assert sensor.poke({}) is True


def test_recursive_lets_double_star_cross_directories(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.csv").write_text("x")
    pattern = tmp_path / "**" / "x.csv"
    assert file_sensor(pattern).poke({}) is False  # ** is one level without recursive
    assert file_sensor(pattern, recursive=True).poke({}) is True
    (tmp_path / "x.csv").write_text("x")
    assert file_sensor(tmp_path / "**" / "x.csv", recursive=True).poke({}) is True


def test_fs_conn_id_gives_the_base_path_of_relative_paths(tmp_path, monkeypatch):
    base = tmp_path / "landing"
    base.mkdir()
    conn = {"conn_type": "fs", "extra": {"path": str(base)}}
    monkeypatch.setenv("DAGWATCH_CONN_FS_LANDING", json.dumps(conn))
    sensor = file_sensor("day/*.json", fs_conn_id="fs_landing")
    assert sensor.base_path() == str(base)
    assert sensor.poke({}) is False
    (base / "day").mkdir()
    (base / "day" / "1.json").write_text("{}")
    assert sensor.poke({}) is True
    # an absolute filepath ignores the base path, as os.path.join (and Airflow) do
    elsewhere = tmp_path / "elsewhere.txt"
    assert file_sensor(elsewhere, fs_conn_id="fs_landing").poke({}) is False
    elsewhere.write_text("x")
    assert file_sensor(elsewhere, fs_conn_id="fs_landing").poke({}) is True


def test_without_a_path_extra_or_a_connection_paths_are_relative_to_the_cwd(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGWATCH_CONN_FS_PLAIN", "fs://")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "here.txt").write_text("x")
    assert file_sensor("here.txt", fs_conn_id="fs_plain").base_path() == ""
    assert file_sensor("here.txt", fs_conn_id="fs_plain").poke({}) is True
    assert file_sensor("here.txt").poke({}) is True
    assert file_sensor("absent.txt").poke({}) is False


def test_file_sensor_filepath_is_templated(tmp_path):
    with DAG("files"):
        sensor = file_sensor(str(tmp_path) + "/{{ ds_nodash }}/{{ params.name }}.csv")
    run_copy = sensor.prepare_for_execution()
    context = {**run_context(START), "params": {"name": "orders"}}
    run_copy.render_template_fields(context, make_jinja_env(None))
    assert run_copy.filepath == f"{tmp_path}/20260302/orders.csv"
    assert sensor.filepath.endswith("/{{ ds_nodash }}/{{ params.name }}.csv")


def test_file_sensor_waits_then_succeeds_through_execute(tmp_path):
    target = tmp_path / "late.csv"
    sensor = file_sensor(target, poke_interval=5, timeout=60)
    clock = drive(sensor)
    clock.on_sleep = lambda: target.write_text("x") if len(clock.sleeps) == 3 else None
    assert sensor.execute({}) is None
    assert clock.sleeps == [5, 5, 5]


def test_file_sensor_soft_fail_and_timeout(tmp_path):
    soft = file_sensor(tmp_path / "never", poke_interval=10, timeout=25, soft_fail=True)
    clock = drive(soft)
    with pytest.raises(SkipTask, match="timed out"):
        soft.execute({})
    assert clock.sleeps == [10, 10, 5]
    hard = file_sensor(tmp_path / "never", poke_interval=10, timeout=25)
    drive(hard)
    with pytest.raises(SensorTimeout, match="task 'wait'"):
        hard.execute({})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filepath": ""}, "filepath must be a non-empty string"),
        ({"filepath": None}, "filepath must be a non-empty string"),
        ({"filepath": "x", "fs_conn_id": ""}, "fs_conn_id must be a connection id or None"),
    ],
)
def test_file_sensor_invalid_arguments(kwargs, message):
    with pytest.raises(DagDefinitionError, match=message):
        FileSensor(task_id="bad", **kwargs)


# -- TimeDeltaSensor ------------------------------------------------------------------------


def test_time_delta_waits_for_the_end_of_the_interval_plus_delta():
    sensor = TimeDeltaSensor(task_id="later", delta=timedelta(hours=2))
    context = run_context(START - timedelta(days=1), START)  # a daily run ending at START
    clock = drive(sensor, FakeClock(START + timedelta(hours=1)))
    assert sensor.target(context) == START + timedelta(hours=2)
    assert sensor.poke(context) is False
    clock.wall = START + timedelta(hours=2)
    assert sensor.poke(context) is False  # strictly after, as in Airflow
    clock.wall += timedelta(microseconds=1)
    assert sensor.poke(context) is True


def test_time_delta_on_a_manual_run_counts_from_its_logical_date():
    sensor = TimeDeltaSensor(task_id="later", delta=timedelta(minutes=5))
    assert sensor.target(run_context(START)) == START + timedelta(minutes=5)
    assert sensor.target({"logical_date": START}) == START + timedelta(minutes=5)


def test_time_sensor_pokes_at_the_target_instead_of_a_whole_interval_late():
    sensor = TimeDeltaSensor(
        task_id="later", delta=timedelta(seconds=150), poke_interval=60, timeout=3600
    )
    clock = drive(sensor)
    sensor.execute(run_context(START))
    assert clock.sleeps[:2] == [60, 60]
    assert clock.sleeps[2] == pytest.approx(30.001)
    assert len(clock.sleeps) == 3
    assert clock.wall > START + timedelta(seconds=150)


def test_time_delta_soft_fail_skips_when_the_time_does_not_come():
    sensor = TimeDeltaSensor(
        task_id="later", delta=timedelta(days=1), poke_interval=30, timeout=60, soft_fail=True
    )
    clock = drive(sensor)
    with pytest.raises(SkipTask, match="timed out"):
        sensor.execute(run_context(START))
    assert clock.sleeps == [30, 30]


def test_time_delta_must_be_a_timedelta():
    with pytest.raises(DagDefinitionError, match="delta must be a timedelta"):
        TimeDeltaSensor(task_id="bad", delta=60)


# -- DateTimeSensor -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-02T10:00:00+02:00", datetime(2026, 3, 2, 8, tzinfo=UTC)),
        ("2026-03-02T10:00:00Z", datetime(2026, 3, 2, 10, tzinfo=UTC)),
        ("2026-03-02T10:00:00", datetime(2026, 3, 2, 10, tzinfo=UTC)),  # naive: UTC
        ("2026-03-02 10:00", datetime(2026, 3, 2, 10, tzinfo=UTC)),
        ("2026-03-02", datetime(2026, 3, 2, tzinfo=UTC)),
        (datetime(2026, 3, 2, 10), datetime(2026, 3, 2, 10, tzinfo=UTC)),
        (pendulum.datetime(2026, 3, 2, 10, tz="Asia/Tokyo"), datetime(2026, 3, 2, 1, tzinfo=UTC)),
    ],
)
def test_target_time_parsing(value, expected):
    parsed = parse_target_time(value, "t")
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", ["tomorrow", "2026-13-01", "P1D", 12])
def test_an_unparsable_target_time_fails_the_task_naming_it(value):
    with pytest.raises(TaskError, match=r"task 't': target_time .*"):
        parse_target_time(value, "t")


def test_date_time_sensor_stores_a_datetime_as_iso_text():
    naive = DateTimeSensor(task_id="a", target_time=datetime(2026, 3, 2, 10))
    aware = DateTimeSensor(
        task_id="b", target_time=pendulum.datetime(2026, 3, 2, 10, tz="Europe/Paris")
    )
    assert naive.target_time == "2026-03-02T10:00:00+00:00"
    assert aware.target_time == "2026-03-02T09:00:00+00:00"


def test_date_time_sensor_waits_for_the_target():
    sensor = DateTimeSensor(task_id="at", target_time="2026-03-02T00:10:00+00:00")
    clock = drive(sensor)
    assert sensor.poke({}) is False
    clock.wall = START + timedelta(minutes=10, seconds=1)
    assert sensor.poke({}) is True


def test_date_time_sensor_target_is_templated():
    with DAG("at"):
        sensor = DateTimeSensor(
            task_id="at", target_time="{{ data_interval_end + macros.timedelta(hours=1) }}"
        )
    run_copy = sensor.prepare_for_execution()
    run_copy.render_template_fields(run_context(START - timedelta(days=1), START))
    assert run_copy.target({}) == START + timedelta(hours=1)
    assert sensor.target_time.startswith("{{")


def test_date_time_sensor_with_native_rendering_gets_a_datetime():
    with DAG("native_at", render_template_as_native_obj=True) as dag:
        sensor = DateTimeSensor(task_id="at", target_time="{{ data_interval_end }}")
    run_copy = sensor.prepare_for_execution()
    run_copy.render_template_fields(run_context(START, START), make_jinja_env(dag))
    assert isinstance(run_copy.target_time, datetime)
    clock = drive(run_copy, FakeClock(START + timedelta(seconds=1)))
    assert run_copy.poke({}) is True
    clock.wall = START
    assert run_copy.poke({}) is False


def test_date_time_sensor_soft_fail():
    sensor = DateTimeSensor(
        task_id="at", target_time="2999-01-01", poke_interval=5, timeout=10, soft_fail=True
    )
    drive(sensor)
    with pytest.raises(SkipTask):
        sensor.execute({})


@pytest.mark.parametrize("value", [None, "", "  ", 1234])
def test_date_time_sensor_invalid_target(value):
    with pytest.raises(DagDefinitionError, match="target_time must be a datetime or a"):
        DateTimeSensor(task_id="bad", target_time=value)
