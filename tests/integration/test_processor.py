"""The DAG processor on good and broken files, against a real metastore."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.parsing.dag_folder import find_dag_files
from engine.parsing.parser import process_folders
from engine.store import dags as dag_store
from engine.store.models import Dag, DagFile

GOOD = """
import pendulum
from engine import DAG, EmptyOperator

with DAG("{dag_id}", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b") >> EmptyOperator(task_id="c")
"""


@pytest.fixture
def dags_folder(home: Path) -> Path:
    folder = home / "dags"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def proc_config(config):
    return config.with_overrides(core__load_examples=False, core__dag_file_processor_timeout=3)


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path.resolve()


def import_errors(store) -> dict[str, str]:
    with store.session() as session:
        return {row.filename: row.stacktrace for row in dag_store.list_import_errors(session)}


def active_dags(store) -> dict[str, str]:
    with store.session() as session:
        return {row.dag_id: row.fileloc for row in dag_store.list_dags(session)}


def test_good_file_is_stored_with_structure_and_parse_stats(store, proc_config, dags_folder):
    path = write(dags_folder, "good.py", GOOD.format(dag_id="good"))
    report = process_folders(store, proc_config)
    assert (report.files_seen, report.files_parsed, report.dags_found) == (1, 1, 1)
    with store.session() as session:
        dag = session.get(Dag, "good")
        file = session.get(DagFile, str(path))
        assert dag.is_active and dag.fileloc == str(path)
        assert [t["task_id"] for t in dag.serialized["tasks"]] == ["a", "b", "c"]
        assert dag.task_count == 3
        assert dag.is_paused  # core.dags_are_paused_at_creation defaults to True
        assert file.dag_count == 1 and file.task_count == 3 and not file.has_import_error
        assert 0 < file.parse_duration < 30


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from engine import DAG\ndef broken(:\n    pass\n", "SyntaxError"),
        ("from engine import DAG\n1 / 0\n", "ZeroDivisionError"),
        ("import sys\nfrom engine import DAG\nsys.exit(3)\n", "sys.exit(3)"),
        ("import os\nfrom engine import DAG\nos._exit(7)\n", "exited with code 7"),
        ("from engine import DAG\nwhile True:\n    pass\n", "took longer than 3 s"),
        (
            "import pendulum\nfrom engine import DAG, EmptyOperator\n"
            "with DAG('cyclic', schedule=None):\n"
            "    a = EmptyOperator(task_id='a'); b = EmptyOperator(task_id='b')\n"
            "    a >> b >> a\n",
            "a -> b -> a",
        ),
    ],
    ids=["syntax-error", "exception", "sys-exit", "os-exit", "infinite-loop", "cycle"],
)
def test_broken_file_becomes_import_error(store, proc_config, dags_folder, source, expected):
    path = write(dags_folder, "broken_dag.py", source)
    write(dags_folder, "fine.py", GOOD.format(dag_id="fine"))
    report = process_folders(store, proc_config)
    errors = import_errors(store)
    assert list(errors) == [str(path)]
    assert expected in errors[str(path)]
    assert report.import_errors == 1
    assert active_dags(store) == {"fine": str((dags_folder / "fine.py").resolve())}
    with store.session() as session:
        assert session.get(DagFile, str(path)).has_import_error


def test_duplicate_dag_id_across_files_names_both_and_keeps_the_first(
    store, proc_config, dags_folder
):
    first = write(dags_folder, "a_first.py", GOOD.format(dag_id="same"))
    second = write(dags_folder, "b_second.py", GOOD.format(dag_id="same"))
    process_folders(store, proc_config)
    errors = import_errors(store)
    assert list(errors) == [str(second)]
    assert str(first) in errors[str(second)] and "defined in two files" in errors[str(second)]
    assert active_dags(store) == {"same": str(first)}
    # The holder keeps it even when the other file is the one that changes later.
    second.write_text(GOOD.format(dag_id="same") + "\n# edited\n")
    process_folders(store, proc_config)
    assert active_dags(store) == {"same": str(first)}
    assert list(import_errors(store)) == [str(second)]


def test_unchanged_files_are_not_imported_again(store, proc_config, dags_folder):
    path = write(dags_folder, "good.py", GOOD.format(dag_id="good"))
    assert process_folders(store, proc_config).files_parsed == 1
    assert process_folders(store, proc_config).files_parsed == 0
    path.write_text(GOOD.format(dag_id="good").replace('"c"', '"d"'))
    assert process_folders(store, proc_config).files_parsed == 1
    with store.session() as session:
        assert [t["task_id"] for t in session.get(Dag, "good").serialized["tasks"]] == [
            "a",
            "b",
            "d",
        ]


def test_a_broken_edit_keeps_the_last_good_dag_until_fixed(store, proc_config, dags_folder):
    path = write(dags_folder, "good.py", GOOD.format(dag_id="good"))
    process_folders(store, proc_config)
    path.write_text("from engine import DAG\nraise RuntimeError('typo')\n")
    process_folders(store, proc_config)
    assert "typo" in import_errors(store)[str(path)]
    assert active_dags(store) == {"good": str(path)}
    path.write_text(GOOD.format(dag_id="good"))
    process_folders(store, proc_config)
    assert import_errors(store) == {}


def test_deleted_file_deactivates_its_dags_and_clears_its_error(store, proc_config, dags_folder):
    good = write(dags_folder, "good.py", GOOD.format(dag_id="good"))
    broken = write(dags_folder, "broken_dag.py", "from engine import DAG\n1/0\n")
    process_folders(store, proc_config)
    good.unlink()
    broken.unlink()
    process_folders(store, proc_config)
    assert active_dags(store) == {}
    assert import_errors(store) == {}
    with store.session() as session:
        assert session.execute(select(DagFile)).scalars().all() == []
        assert not session.get(Dag, "good").is_active


def test_a_dag_removed_from_its_file_is_deactivated(store, proc_config, dags_folder):
    path = write(dags_folder, "two.py", GOOD.format(dag_id="one") + GOOD.format(dag_id="two"))
    process_folders(store, proc_config)
    assert set(active_dags(store)) == {"one", "two"}
    path.write_text(GOOD.format(dag_id="one"))
    process_folders(store, proc_config)
    assert set(active_dags(store)) == {"one"}


def test_dag_files_can_import_helpers_from_the_dags_folder(store, proc_config, dags_folder):
    write(dags_folder, "helpers.py", "TASKS = ['x', 'y']\n")
    write(
        dags_folder,
        "uses_helpers.py",
        """
        from engine import DAG, EmptyOperator
        from helpers import TASKS

        with DAG("uses_helpers", schedule=None):
            for name in TASKS:
                EmptyOperator(task_id=name)
        """,
    )
    process_folders(store, proc_config)
    assert import_errors(store) == {}
    assert "uses_helpers" in active_dags(store)


def test_safe_mode_skips_files_that_cannot_define_a_dag(dags_folder):
    write(dags_folder, "util.py", "X = 1\n")
    write(dags_folder, "real.py", GOOD.format(dag_id="real"))
    (dags_folder / "__pycache__").mkdir()
    write(dags_folder / "__pycache__", "cached_dag.py", GOOD.format(dag_id="cached"))
    assert [p.name for p in find_dag_files(dags_folder)] == ["real.py"]


def test_example_dags_load_without_import_errors(store, config):
    report = process_folders(store, config.with_overrides(core__load_examples=True))
    assert report.import_errors == 0, import_errors(store)
    assert set(active_dags(store)) >= {
        "example_etl",
        "example_fan_out_in",
        "example_branching",
        "example_flaky_retry",
        "example_sensor",
        "example_sla",
        "example_pool_limited",
        "example_mapping",
    }


NAIVE = """
from datetime import datetime
from engine import DAG, EmptyOperator

with DAG("local", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=True):
    EmptyOperator(task_id="a")
"""


def test_naive_dates_are_in_the_default_timezone_for_parser_and_worker(
    store, proc_config, dags_folder
):
    """core.default_timezone: a naive start date is local midnight, and so is the daily
    schedule, both where the file is parsed and where a worker imports it to run a task."""
    from engine import runtime
    from engine.execution.attempt import load_dag

    config = proc_config.with_overrides(core__default_timezone="Europe/Amsterdam")
    path = write(dags_folder, "local.py", NAIVE)
    process_folders(store, config)
    with store.session() as session:
        serialized = session.get(Dag, "local").serialized
    assert serialized["start_date"] == "2025-12-31T23:00:00+00:00"
    assert serialized["timezone"] == serialized["schedule"]["timezone"] == "Europe/Amsterdam"
    runtime.configure(config, store)  # as a worker is before it imports the file
    imported = load_dag(str(path), "local", "a", None)
    assert imported.start_date.isoformat() == serialized["start_date"]
    assert str(imported.timezone.name) == "Europe/Amsterdam"
    first = imported.timetable.next_dagrun_info(start_date=imported.start_date, catchup=True)
    second = imported.timetable.next_dagrun_info(first.end, imported.start_date, catchup=True)
    assert [interval.start.isoformat() for interval in (first, second)] == [
        "2025-12-31T23:00:00+00:00",  # local midnights
        "2026-01-01T23:00:00+00:00",
    ]


def test_naive_dates_stay_utc_by_default(store, proc_config, dags_folder):
    write(dags_folder, "local.py", NAIVE)
    process_folders(store, proc_config)
    with store.session() as session:
        serialized = session.get(Dag, "local").serialized
    assert serialized["start_date"] == "2026-01-01T00:00:00+00:00"
    assert serialized["timezone"] == "UTC"
