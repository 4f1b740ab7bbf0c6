"""The metastore source: real scrapes of /metrics over HTTP, values read from a seeded store."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePath

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from engine.observability.collector import metastore_source
from engine.observability.labels import file_label
from engine.states import TaskState
from engine.store.db import Store
from engine.store.models import Dag, DagFile, DagRun, ImportError_, TaskInstance
from engine.store.pools import set_pool
from metrics import CATALOG
from metrics.prometheus import PrometheusBackend

T0 = datetime(2026, 1, 10, 12, tzinfo=UTC)
Series = dict[tuple[tuple[str, str], ...], float]


@pytest.fixture
def backend() -> Iterator[PrometheusBackend]:
    prometheus = PrometheusBackend(CollectorRegistry())
    prometheus.serve("127.0.0.1", 0)
    yield prometheus
    prometheus.close()


def scrape(backend: PrometheusBackend) -> dict[str, Series]:
    """{catalog name: {sorted labels: value}} from a real GET /metrics."""
    with urllib.request.urlopen(f"{backend.server.url}/metrics", timeout=10) as response:
        assert response.status == 200
        body = response.read().decode()
    by_prometheus_name = {metric.prometheus_name: metric.name for metric in CATALOG}
    found: dict[str, Series] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            name = by_prometheus_name.get(sample.name, sample.name)
            found.setdefault(name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


def ti_labels(queue: str, dag_id: str, task_id: str) -> tuple[tuple[str, str], ...]:
    return labels(queue=queue, dag_id=dag_id, task_id=task_id)


def add_run(session, dag_id: str, run_id: str, state: str, day: int) -> None:
    session.add(
        DagRun(
            dag_id=dag_id,
            run_id=run_id,
            run_type="manual",
            state=state,
            logical_date=datetime(2026, 1, day, tzinfo=UTC),
        )
    )
    session.flush()


def add_ti(session, run: tuple[str, str], task_id: str, state: str, **columns) -> None:
    session.add(TaskInstance(dag_id=run[0], run_id=run[1], task_id=task_id, state=state, **columns))


def seed(store: Store, dags_folder: Path) -> None:
    """Pools, runs in every state, a mapped task, DAGs, parsed files and import errors."""
    folder = dags_folder.resolve()
    with store.session() as session:
        set_pool(session, "p3", 3)
        set_pool(session, "empty", 5)
        add_run(session, "etl", "r1", "running", 1)
        add_run(session, "etl", "r2", "queued", 2)
        add_run(session, "etl", "r0", "success", 3)
        add_run(session, "other", "r1", "running", 1)
        r1, r2, r0 = ("etl", "r1"), ("etl", "r2"), ("etl", "r0")
        add_ti(session, r1, "load", "running", pool="p3", pool_slots=2)
        add_ti(session, r1, "small", "scheduled", pool="p3", pool_slots=1)
        add_ti(session, r1, "big", "scheduled", pool="p3", pool_slots=2)
        for index, state in enumerate(["scheduled", "scheduled", "queued"]):
            add_ti(session, r1, "fan", state, map_index=index, queue="q2")
        add_ti(session, r1, "extract", "success")
        add_ti(session, r2, "load", "none", pool="p3", pool_slots=2)
        add_ti(session, r0, "load", "success", pool="p3", pool_slots=2)
        add_ti(session, r0, "extract", "failed")
        for dag_id, active in (("etl", True), ("other", True), ("gone", False)):
            session.add(
                Dag(
                    dag_id=dag_id,
                    fileloc=str(folder / f"{dag_id}.py"),
                    is_active=active,
                    serialized={},
                    dag_hash="h",
                )
            )
        for path, age in ((folder / "etl.py", 30), (folder / "sub" / "other.py", 90)):
            session.add(
                DagFile(
                    fileloc=str(path),
                    content_hash="h",
                    last_parsed=T0 - timedelta(seconds=age),
                    parse_duration=0.1,
                )
            )
        for path in (folder / "sub" / "broken.py", Path("/elsewhere/x/outside.py")):
            session.add(ImportError_(filename=str(path), timestamp=T0, stacktrace="boom"))


def test_a_scrape_reads_pools_tasks_runs_and_files_from_the_metastore(
    store: Store, config, backend: PrometheusBackend
) -> None:
    seed(store, config["core.dags_folder"])
    with store.session() as session:
        for day, minutes in ((8, 10), (9, 3)):
            session.add(
                DagRun(
                    dag_id="other",
                    run_id=f"q{day}",
                    run_type="scheduled",
                    state="queued",
                    logical_date=datetime(2026, 1, day, tzinfo=UTC),
                    queued_at=T0 - timedelta(minutes=minutes),
                )
            )
    backend.add_source(metastore_source(store, config, clock=lambda: T0))

    found = scrape(backend)

    pools = {"default_pool": 128, "p3": 3, "empty": 5}
    assert set(pools) == {dict(key)["pool"] for key in found["pool.open_slots"]}
    assert found["pool.open_slots"] == {
        labels(pool="p3"): 1.0,  # 3 slots, the running `load` holds 2
        labels(pool="default_pool"): 127.0,  # the queued fan[2] holds 1
        labels(pool="empty"): 5.0,
    }
    assert found["pool.running_slots"] == {
        labels(pool="p3"): 2.0,
        labels(pool="default_pool"): 0.0,
        labels(pool="empty"): 0.0,
    }
    assert found["pool.queued_slots"] == {
        labels(pool="p3"): 0.0,
        labels(pool="default_pool"): 1.0,
        labels(pool="empty"): 0.0,
    }
    assert found["pool.scheduled_slots"] == {
        labels(pool="p3"): 3.0,
        labels(pool="default_pool"): 2.0,
        labels(pool="empty"): 0.0,
    }
    # `big` wants 2 slots of p3's 1 open one; `small` fits, so it does not starve
    assert found["pool.starving_tasks"] == {
        labels(pool="p3"): 1.0,
        labels(pool="default_pool"): 0.0,
        labels(pool="empty"): 0.0,
    }
    assert found["ti.running"] == {ti_labels("default", "etl", "load"): 1.0}
    assert found["ti.queued"] == {ti_labels("q2", "etl", "fan"): 1.0}
    assert found["ti.scheduled"] == {
        ti_labels("default", "etl", "small"): 1.0,
        ti_labels("default", "etl", "big"): 1.0,
        ti_labels("q2", "etl", "fan"): 2.0,  # two mapped instances, one series
    }
    # task instances of active runs only: r0 (success) is history
    expected_states = dict.fromkeys([state.value for state in TaskState], 0.0)
    expected_states.update(scheduled=4.0, queued=1.0, running=1.0, success=1.0, none=1.0)
    assert found["task_instances"] == {
        labels(state=state): value for state, value in expected_states.items()
    }
    assert found["scheduler.dagruns.running"] == {(): 2.0}
    # the oldest queued run per DAG: since queued_at, else since its logical date
    assert found["dagrun.queued_age"] == {
        labels(dag_id="other"): 600.0,
        labels(dag_id="etl"): (T0 - datetime(2026, 1, 2, tzinfo=UTC)).total_seconds(),
    }
    assert found["dagbag_size"] == {(): 2.0}
    assert found["dag_processing.import_errors"] == {(): 2.0}
    # relative to the DAG folder (the guard turns '/' into '_'), else the basename
    assert found["import_errors"] == {
        labels(file="sub_broken.py"): 1.0,
        labels(file="outside.py"): 1.0,
    }
    assert found["dag_processing.last_run.seconds_ago"] == {
        labels(file="etl.py"): 30.0,
        labels(file="sub_other.py"): 90.0,
    }


def test_an_empty_metastore_shows_zeros_and_values_follow_the_metastore(
    store: Store, config, backend: PrometheusBackend
) -> None:
    backend.add_source(metastore_source(store, config, clock=lambda: T0))

    found = scrape(backend)

    assert found["pool.open_slots"] == {labels(pool="default_pool"): 128.0}
    assert found["pool.starving_tasks"] == {labels(pool="default_pool"): 0.0}
    assert set(found["task_instances"].values()) == {0.0}
    assert len(found["task_instances"]) == len(TaskState)
    assert found["scheduler.dagruns.running"] == {(): 0.0}
    assert found["dagbag_size"] == {(): 0.0}
    assert found["dag_processing.import_errors"] == {(): 0.0}
    for absent in ("ti.scheduled", "ti.queued", "ti.running", "import_errors", "dagrun.queued_age"):
        assert absent not in found
    assert "dag_processing.last_run.seconds_ago" not in found

    with store.session() as session:
        add_run(session, "etl", "r1", "running", 1)
        add_ti(session, ("etl", "r1"), "load", "running", pool_slots=5)

    found = scrape(backend)
    assert found["pool.open_slots"] == {labels(pool="default_pool"): 123.0}
    assert found["ti.running"] == {ti_labels("default", "etl", "load"): 1.0}
    assert found["task_instances"][labels(state="running")] == 1.0


def statements_of_one_scrape(store: Store, backend: PrometheusBackend) -> list[str]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        scrape(backend)
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
    return seen


def test_a_scrape_runs_the_same_statements_for_ten_or_a_thousand_rows(
    store: Store, config, backend: PrometheusBackend
) -> None:
    backend.add_source(metastore_source(store, config, clock=lambda: T0))
    with store.session() as session:
        add_run(session, "etl", "r1", "running", 1)
        add_ti(session, ("etl", "r1"), "t", "running")
    few = statements_of_one_scrape(store, backend)

    folder = Path(config["core.dags_folder"]).resolve()
    with store.session() as session:
        for day in range(2, 12):
            add_run(session, "etl", f"r{day}", "running", day)
            for i in range(100):
                add_ti(session, ("etl", f"r{day}"), f"t{i}", "scheduled", pool=f"p{i % 7}")
        for i in range(20):
            set_pool(session, f"p{i}", 2)
            session.add(
                DagFile(
                    fileloc=str(folder / f"f{i}.py"),
                    content_hash="h",
                    last_parsed=T0,
                    parse_duration=0.1,
                )
            )
    many = statements_of_one_scrape(store, backend)

    assert many == few
    queries = [s for s in many if s.lstrip().upper().startswith("SELECT")]
    assert len(queries) == 7


def test_a_failing_metastore_costs_its_samples_not_the_scrape(
    config, backend: PrometheusBackend
) -> None:
    broken = Store("postgresql+psycopg://dagwatch:secret@127.0.0.1:1/nowhere")
    try:
        backend.add_source(metastore_source(broken, config, clock=lambda: T0))
        found = scrape(backend)
    finally:
        broken.dispose()

    assert "pool.open_slots" not in found
    assert "task_instances" not in found


def test_file_labels_are_relative_to_the_dag_folder_else_the_basename() -> None:
    folders = [PurePath("/dags"), PurePath("/real/dags")]

    assert file_label("/dags/etl.py", folders) == "etl.py"
    assert file_label("/real/dags/team/etl.py", folders) == "team/etl.py"
    assert file_label("/opt/example_dags/tutorial.py", folders) == "tutorial.py"
    assert file_label("/dagsx/etl.py", folders) == "etl.py"


def test_the_pusher_sends_the_same_gauges_to_push_backends(store: Store, config) -> None:
    from engine.observability.service import GaugePusher
    from metrics import Stats
    from metrics.testing import MemoryBackend

    with store.session() as session:
        add_run(session, "etl", "r1", "running", 1)
        add_ti(session, ("etl", "r1"), "load", "queued", pool_slots=2)
    recorder = MemoryBackend()
    pusher = GaugePusher(metastore_source(store, config, clock=lambda: T0), Stats([recorder]))
    pusher.push_once()
    assert recorder.values("pool.queued_slots") == [({"pool": "default_pool"}, 2.0)]
    assert recorder.values("ti.queued") == [
        ({"queue": "default", "dag_id": "etl", "task_id": "load"}, 1.0)
    ]
    assert {e.kind for e in recorder.emissions} == {"gauge"}


def test_the_pusher_leaves_the_loops_gauges_to_the_loop(store: Store, config) -> None:
    from engine.observability.emit import LOOP_GAUGES
    from engine.observability.service import GaugePusher
    from metrics import Stats
    from metrics.testing import MemoryBackend

    recorder = MemoryBackend()
    source = metastore_source(store, config, clock=lambda: T0)
    GaugePusher(source, Stats([recorder]), skip=LOOP_GAUGES).push_once()
    names = {emission.name for emission in recorder.emissions}
    assert "pool.queued_slots" in names and "dagbag_size" in names
    assert not names & LOOP_GAUGES
