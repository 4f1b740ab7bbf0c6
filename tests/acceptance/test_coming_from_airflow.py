"""Coming from Airflow, through the CLI as a user runs it: an Airflow 2 style DAG file runs
with `dags test` (SQLite and PostgreSQL), `dags migrate` rewrites Airflow imports, display
names are listed, a broken DAG file's error is shown, custom priority strategies come from
a plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.store.db import Store
from engine.store.models import Dag
from tests.helpers import create_pg_database, drop_pg_database, run_cli

AIRFLOW2_DAG = '''\
"""An Airflow 2 DAG file: only its imports were changed."""
import json
import logging
from pathlib import Path

from engine import DAG, BaseOperator, BashOperator, DummyOperator, PythonOperator
from engine.utils.dates import days_ago
from engine.utils.decorators import apply_defaults

OUT = Path(__OUT__)


class WriteOperator(BaseOperator):
    """A custom operator in Airflow 2 style: apply_defaults, self.log, templated field."""

    template_fields = ("content",)

    @apply_defaults
    def __init__(self, path, content, **kwargs):
        super().__init__(**kwargs)
        self.path = path
        self.content = content

    def execute(self, context):
        self.log.info("writing %s for %s", self.path, context["execution_date"])
        (OUT / self.path).write_text(self.content)


def _report(execution_date, next_ds, prev_ds, **context):
    values = {
        "execution_date": execution_date.isoformat(),
        "next_ds": next_ds,
        "prev_ds": prev_ds,
        "tomorrow_ds": context["tomorrow_ds"],
        "yesterday_ds_nodash": context["yesterday_ds_nodash"],
        "prev_execution_date_success": context["prev_execution_date_success"],
    }
    (OUT / "report.json").write_text(json.dumps(values))


default_args = {"owner": "airflow", "start_date": days_ago(2), "retries": 0}

with DAG(
    "airflow2_style",
    default_args=default_args,
    schedule_interval="@daily",
    concurrency=2,
    catchup=False,
) as dag:
    fetch = BashOperator(
        task_id="fetch",
        bash_command="echo {{ execution_date }} {{ next_ds }} > __OUT_DIR__/fetch.txt",
    )
    report = PythonOperator(task_id="report", python_callable=_report, provide_context=True)
    write = WriteOperator(task_id="write", path="write.txt", content="{{ ds }}..{{ next_ds }}")
    join = DummyOperator(task_id="join")
    [fetch, report, write] >> join
'''

LOGICAL_DATE = "2024-03-05"


def _write_dag(home: Path, out: Path) -> None:
    dags = home / "dags"
    dags.mkdir(exist_ok=True)
    source = AIRFLOW2_DAG.replace("__OUT__", repr(str(out))).replace("__OUT_DIR__", str(out))
    (dags / "airflow2_style.py").write_text(source)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request, cli_env):
    """The CLI's environment, on a migrated SQLite or PostgreSQL metastore."""
    env = dict(cli_env)
    url = None
    if request.param == "postgres":
        request.getfixturevalue("pg_url")  # skip or fail like the other PostgreSQL tests
        url = create_pg_database("dagwatch_test_af2")
        env["DAGWATCH__DATABASE__SQL_ALCHEMY_CONN"] = url
    result = run_cli("db", "migrate", env=env)
    assert result.returncode == 0, result.stderr
    yield env
    if url is not None:
        drop_pg_database(url)


def test_an_airflow_2_dag_file_runs_with_dags_test(env, home, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    _write_dag(home, out)
    result = run_cli(
        "dags", "test", "airflow2_style", "--logical-date", LOGICAL_DATE, env=env, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for task_id in ("fetch", "report", "write", "join"):
        assert any(
            line.split()[:2] == [task_id, "success"] for line in result.stdout.splitlines()
        ), result.stdout
    assert "success" in result.stdout.splitlines()[-1]
    # the values Airflow 2 gives a run of a daily DAG at 2024-03-05
    assert (out / "fetch.txt").read_text().split() == [
        "2024-03-05T00:00:00+00:00",
        "2024-03-06",
    ]
    assert json.loads((out / "report.json").read_text()) == {
        "execution_date": "2024-03-05T00:00:00+00:00",
        "next_ds": "2024-03-06",
        "prev_ds": "2024-03-04",
        "tomorrow_ds": "2024-03-06",
        "yesterday_ds_nodash": "20240304",
        "prev_execution_date_success": None,  # no earlier successful run
    }
    assert (out / "write.txt").read_text() == "2024-03-05..2024-03-06"
    # one warning per idiom, each naming the Airflow 3 spelling
    warnings = [line for line in result.stderr.splitlines() if "DagwatchDeprecationWarning" in line]
    for idiom, spelling in [
        ("DAG(schedule_interval=...)", "DAG(schedule=...)"),
        ("DAG(concurrency=...)", "max_active_tasks"),
        ("days_ago(n)", "pendulum.today"),
        ("DummyOperator", "EmptyOperator"),
        ("apply_defaults", "remove the decorator"),
        ("provide_context=True", "remove it"),
        ("execution_date", "logical_date"),
        ("next_ds", "data_interval_end | ds"),
    ]:
        found = [w for w in warnings if f": {idiom} is an Airflow 2 idiom" in w]
        assert len(found) == 1 and spelling in found[0], (idiom, warnings)
    # self.log writes to the task's log
    logs = list((home / "logs" / "airflow2_style").rglob("write/attempt=1.log"))
    assert len(logs) == 1 and "writing write.txt for 2024-03-05" in logs[0].read_text()


ROCKETS = """\
import json
import pathlib

import airflow.utils.dates
from airflow import DAG
from airflow.operators.bash import BashOperator  # downloads
from airflow.operators.python import PythonOperator
from airflow.providers.http.operators.http import SimpleHttpOperator

dag = DAG(
    dag_id="rockets",
    start_date=airflow.utils.dates.days_ago(14),
    schedule_interval=None,
)
"""


def test_dags_migrate_prints_a_diff_lists_what_it_cannot_map_and_writes(cli_env, tmp_path):
    path = tmp_path / "rockets.py"
    path.write_text(ROCKETS)
    result = run_cli("dags", "migrate", str(path), env=cli_env)
    assert result.returncode == 1  # one import could not be mapped
    assert result.stdout.startswith(f"--- {path}\n+++ {path}\n")
    assert "-from airflow.operators.bash import BashOperator  # downloads\n" in result.stdout
    assert "+from engine import BashOperator  # downloads\n" in result.stdout
    assert "+    start_date=engine.utils.dates.days_ago(14),\n" in result.stdout
    assert f"{path}:8: cannot map `from airflow.providers.http" in result.stderr
    assert path.read_text() == ROCKETS  # a diff only

    result = run_cli("dags", "migrate", "--write", str(tmp_path), env=cli_env)
    assert result.returncode == 1 and f"rewrote {path}" in result.stdout
    migrated = path.read_text()
    assert "from engine import PythonOperator\n" in migrated
    assert "from airflow.providers.http.operators.http import SimpleHttpOperator" in migrated

    path.write_text(
        migrated.replace(
            "from airflow.providers.http.operators.http import SimpleHttpOperator\n", ""
        )
    )
    again = run_cli("dags", "migrate", str(path), env=cli_env)
    assert (again.returncode, again.stdout) == (0, "")
    missing = run_cli("dags", "migrate", str(tmp_path / "nope.py"), env=cli_env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


DISPLAY = """\
from engine import DAG, EmptyOperator

with DAG("sales_v2", dag_display_name="Sales, version 2", schedule=None) as dag:
    EmptyOperator(task_id="load", task_display_name="Load the ledger") >> EmptyOperator(
        task_id="publish"
    )
"""


def test_display_names_in_dags_list_and_task_states(cli_env, home):
    (home / "dags").mkdir()
    (home / "dags" / "sales.py").write_text(DISPLAY)
    assert run_cli("db", "migrate", env=cli_env).returncode == 0
    result = run_cli("dags", "test", "sales_v2", "--logical-date", LOGICAL_DATE, env=cli_env)
    assert result.returncode == 0, result.stderr
    table = run_cli("dags", "list", env=cli_env).stdout
    assert "dag_display_name" in table.splitlines()[0] and "Sales, version 2" in table
    listing = json.loads(run_cli("dags", "list", "-o", "json", env=cli_env).stdout)
    names = {row["dag_id"]: row["dag_display_name"] for row in listing}
    assert names["sales_v2"] == "Sales, version 2"
    assert names["example_etl"] == "example_etl"  # a DAG without one shows its id
    run_id = f"test__{LOGICAL_DATE}T00:00:00+00:00"
    states = json.loads(
        run_cli("tasks", "states-for-dag-run", "sales_v2", run_id, "-o", "json", env=cli_env).stdout
    )
    assert {row["task_id"]: row["task_display_name"] for row in states} == {
        "load": "Load the ledger",
        "publish": "publish",
    }
    table = run_cli("tasks", "states-for-dag-run", "sales_v2", run_id, env=cli_env).stdout
    assert "task_display_name" in table.splitlines()[0] and "Load the ledger" in table


BROKEN = """\
from engine import DAG
from engine.sdk.operators.bash import BashOperator  # an import that does not exist

with DAG("broken_one", schedule=None) as dag:
    pass
"""


def test_dags_test_of_a_dag_whose_file_failed_prints_the_import_error(cli_env, home):
    dags = home / "dags" / ("a_very_long_folder_name_" * 4)
    dags.mkdir(parents=True)
    (dags / "broken_one.py").write_text(BROKEN)
    (dags / "long_error.py").write_text("from engine import DAG\nraise ValueError('x' * 300)\n")
    assert run_cli("db", "migrate", env=cli_env).returncode == 0
    result = run_cli("dags", "test", "broken_one", env=cli_env)
    assert result.returncode == 1
    assert "DAG 'broken_one' not found: its file" in result.stderr
    assert "ModuleNotFoundError: No module named 'engine.sdk.operators.bash'" in result.stderr
    assert "dagwatch dags list-import-errors --verbose" in result.stderr
    assert "Traceback" not in result.stderr.splitlines()[0]
    unknown = run_cli("dags", "test", "no_such_dag", env=cli_env)
    assert unknown.returncode == 1 and "not found; `dagwatch dags list`" in unknown.stderr

    table = run_cli("dags", "list-import-errors", env={**cli_env, "COLUMNS": "100"}).stdout
    lines = table.splitlines()
    assert len(lines) == 4 and all(len(line) <= 100 for line in lines), table
    assert "_folder_name_/broken_one.py | " in table  # paths keep their end
    assert "ModuleNotFoundError: No module named 'engine" in table
    assert "ValueError: xxx" in table and "x…\n" in table  # clipped to the terminal
    wide = run_cli("dags", "list-import-errors", env={**cli_env, "COLUMNS": "300"}).stdout
    assert max(len(line) for line in wide.splitlines()) <= 120
    verbose = run_cli("dags", "list-import-errors", "--verbose", env=cli_env).stdout
    assert verbose.count("Traceback (most recent call last):") == 2 and "x" * 300 in verbose
    full = json.loads(run_cli("dags", "list-import-errors", "-o", "json", env=cli_env).stdout)
    assert all(row["error"].startswith("Traceback") for row in full)


PLUGIN = '''\
from engine import PriorityWeightStrategy


class ByName(PriorityWeightStrategy):
    """Tasks whose id starts with "urgent" go first."""

    def get_weight(self, ti):
        return 100 if ti.task_id.startswith("urgent") else 1


priority_weight_strategies = [ByName]
'''

PRIORITY_DAG = """\
from engine import DAG, EmptyOperator
from my_priorities import ByName

with DAG("by_priority", schedule=None) as dag:
    EmptyOperator(task_id="urgent_fix", weight_rule=ByName())
    EmptyOperator(task_id="later", weight_rule="my_priorities.ByName")
"""


def test_a_plugin_registers_a_priority_strategy_computed_at_parse_time(cli_env, home, tmp_path):
    site = tmp_path / "site"
    info = site / "my_priorities-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "my_priorities.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-priorities\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dagwatch.plugins]\nmy_priorities = my_priorities\n")
    (home / "dags").mkdir()
    (home / "dags" / "by_priority.py").write_text(PRIORITY_DAG)
    env = {**cli_env, "PYTHONPATH": str(site)}
    assert run_cli("db", "migrate", env=env).returncode == 0
    result = run_cli("dags", "reserialize", env=env)
    assert result.returncode == 0 and "0 import errors" in result.stdout, result.stdout
    store = Store(f"sqlite:///{home / 'dagwatch.db'}")
    try:
        with store.session() as session:
            tasks = session.get(Dag, "by_priority").serialized["tasks"]
    finally:
        store.dispose()
    weights = {t["task_id"]: (t["weight_rule"], t["priority_weight_total"]) for t in tasks}
    assert weights == {
        "urgent_fix": ("my_priorities.ByName", 100),
        "later": ("my_priorities.ByName", 1),
    }
    # the module importable but not registered by a plugin: an import error naming why
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "my_priorities.py").write_text(PLUGIN)
    env = {**cli_env, "PYTHONPATH": str(bare)}
    result = run_cli("dags", "reserialize", "--force", env=env)
    assert "1 import errors" in result.stdout, result.stdout + result.stderr
    errors = json.loads(run_cli("dags", "list-import-errors", "-o", "json", env=env).stdout)
    assert "weight_rule 'my_priorities.ByName' is invalid" in errors[0]["error"]
