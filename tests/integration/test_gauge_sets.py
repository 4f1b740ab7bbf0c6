"""The engine's gauge owners against a real metastore: the processor sends every file's
parse duration each pass, the metastore pusher and the scheduler loop zero what went
away (and never zero anything because the metastore could not be read)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.clock import FakeClock
from engine.execution.stub import StubExecutor
from engine.observability.collector import metastore_source
from engine.observability.service import GaugePusher
from engine.parsing.parser import process_folders
from engine.scheduling.scheduler import GAUGE_INTERVAL, Scheduler
from engine.store import pools
from engine.store.models import DagFile, DagRun, TaskInstance
from metrics import Stats
from metrics.testing import MemoryBackend

T0 = datetime(2026, 1, 10, 12, tzinfo=UTC)
DAG_FILE = """
from engine import DAG, EmptyOperator

with DAG("{dag_id}", schedule=None):
    EmptyOperator(task_id="a")
"""
LOAD = {"queue": "default", "dag_id": "etl", "task_id": "load"}


@pytest.fixture
def local_config(config):
    config = config.with_overrides(
        core__load_examples=False,
        core__dags_are_paused_at_creation=False,
        scheduler__loop_interval=0,
    )
    config["core.dags_folder"].mkdir(parents=True, exist_ok=True)
    return config


def write(folder: Path, name: str) -> None:
    (folder / name).write_text(textwrap.dedent(DAG_FILE.format(dag_id=name[:-3])))


def stored_durations(store) -> dict[str, float]:
    with store.session() as session:
        rows = session.query(DagFile.fileloc, DagFile.parse_duration).all()
    return {Path(fileloc).name: duration for fileloc, duration in rows}


def test_every_pass_sends_each_files_duration_without_importing_it_again(
    store, local_config, emitted: MemoryBackend
) -> None:
    folder = local_config["core.dags_folder"]
    write(folder, "a.py")
    write(folder, "b.py")
    assert process_folders(store, local_config).files_parsed == 2
    durations = stored_durations(store)
    first = emitted.values("dag_processing.last_duration")
    assert first == [({"file": "a.py"}, durations["a.py"]), ({"file": "b.py"}, durations["b.py"])]
    emitted.clear()

    assert process_folders(store, local_config).files_parsed == 0  # nothing imported
    assert emitted.values("dag_processing.last_duration") == first
    assert len(emitted.values("dag_processing.total_parse_time")) == 1
    emitted.clear()

    (folder / "b.py").unlink()
    assert process_folders(store, local_config).files_parsed == 0
    assert emitted.values("dag_processing.last_duration") == [first[0]]


def add_running_task(store) -> None:
    with store.session() as session:
        session.add(
            DagRun(dag_id="etl", run_id="r1", run_type="manual", state="running", logical_date=T0)
        )
        session.flush()
        session.add(TaskInstance(dag_id="etl", run_id="r1", task_id="load", state="running"))


def set_task_state(store, state: str) -> None:
    with store.session() as session:
        session.query(TaskInstance).update({"state": state})


def test_the_pusher_zeroes_a_task_that_stopped_running_once(store, local_config) -> None:
    add_running_task(store)
    recorder = MemoryBackend()
    reachable = {"metastore": True}
    read = metastore_source(store, local_config, clock=lambda: T0)

    def source():
        if not reachable["metastore"]:
            raise ConnectionError("metastore away")
        return read()

    pusher = GaugePusher(source, Stats([recorder], strict=True))
    pusher.push_once()
    assert recorder.values("ti.running") == [(LOAD, 1)]

    reachable["metastore"] = False  # a failed read zeroes nothing
    with pytest.raises(ConnectionError):
        pusher.push_once()
    assert recorder.values("ti.running") == [(LOAD, 1)]

    reachable["metastore"] = True
    set_task_state(store, "success")
    pusher.push_once()
    pusher.push_once()
    pusher.push_once()
    assert recorder.values("ti.running") == [(LOAD, 1), (LOAD, 0)]
    assert recorder.forgotten("ti.running") == [LOAD]
    # the pool's series stay: the metastore still shows the pool, with nothing running
    assert recorder.values("pool.running_slots")[-1] == ({"pool": "default_pool"}, 0)


def test_the_loop_zeroes_a_deleted_pools_gauges_once(
    store, local_config, emitted: MemoryBackend
) -> None:
    with store.session() as session:
        pools.set_pool(session, "three", 3)
    clock = FakeClock(T0)
    scheduler = Scheduler(store, local_config, StubExecutor(4), clock=clock)
    scheduler.start()

    def tick() -> dict[tuple[str, str], float]:
        emitted.clear()
        clock.advance(GAUGE_INTERVAL)  # the loop sends its gauges at most once a second
        scheduler.tick(T0)
        return {
            (e.name, e.labels.get("pool", "")): e.value
            for e in emitted.emissions
            if e.kind == "gauge" and e.name.startswith("pool.")
        }

    assert tick()[("pool.open_slots", "three")] == 3
    with store.session() as session:
        pools.delete_pool(session, "three")
    gauges = tick()
    assert gauges[("pool.open_slots", "three")] == 0
    assert gauges[("pool.starving_tasks", "three")] == 0
    gauges = tick()
    assert ("pool.open_slots", "three") not in gauges
    assert {tuple(labels.items()) for labels in emitted.forgotten("pool.open_slots")} == {
        (("pool", "three"),)
    }
    assert gauges[("pool.open_slots", "default_pool")] == 128
