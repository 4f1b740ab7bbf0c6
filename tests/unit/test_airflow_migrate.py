"""`dagwatch dags migrate`'s rewriting (engine.parsing.airflow_migrate), without the CLI."""

from __future__ import annotations

import difflib

from engine.parsing.airflow_migrate import migrate_file, migrate_source, python_files

AIRFLOW_2 = '''\
"""Rocket launches."""
import json

import airflow.utils.dates  # the book's spelling
from airflow import DAG
from airflow.operators.bash import BashOperator  # keep me
from airflow.operators.python import (
    PythonOperator,  # and me
    get_current_context,
)
from airflow.exceptions import AirflowSkipException, AirflowException
from airflow.operators.dummy import DummyOperator
from airflow.utils.dates import days_ago
from airflow.providers.postgres.hooks.postgres import PostgresHook

dag = DAG(dag_id="rockets", start_date=airflow.utils.dates.days_ago(14))


def _check(ti, **context):
    if not ti:
        raise AirflowSkipException("nothing")  # skip
    obj = json.loads("{}")
    obj.AirflowException = 1  # an attribute of something else keeps its name
    raise AirflowException("boom")


join = DummyOperator(task_id="join", dag=dag)
'''


#: the lines `dags migrate` changes, as `difflib.ndiff` shows them; all others stay as written
CHANGES = [
    "- import airflow.utils.dates  # the book's spelling",
    "+ import engine.utils.dates  # the book's spelling",
    "- from airflow import DAG",
    "+ from engine import DAG",
    "- from airflow.operators.bash import BashOperator  # keep me",
    "+ from engine import BashOperator  # keep me",
    "- from airflow.operators.python import (",
    "+ from engine import (",
    "- from airflow.exceptions import AirflowSkipException, AirflowException",
    "- from airflow.operators.dummy import DummyOperator",
    "+ from engine import SkipTask",
    "+ from engine.exceptions import TaskError",
    "+ from engine import EmptyOperator",
    "- from airflow.utils.dates import days_ago",
    "+ from engine.utils.dates import days_ago",
    '- dag = DAG(dag_id="rockets", start_date=airflow.utils.dates.days_ago(14))',
    '+ dag = DAG(dag_id="rockets", start_date=engine.utils.dates.days_ago(14))',
    '-         raise AirflowSkipException("nothing")  # skip',
    '+         raise SkipTask("nothing")  # skip',
    '-     raise AirflowException("boom")',
    '+     raise TaskError("boom")',
    '- join = DummyOperator(task_id="join", dag=dag)',
    '+ join = EmptyOperator(task_id="join", dag=dag)',
]


def test_imports_are_rewritten_and_uses_renamed_with_comments_kept():
    after, unmapped = migrate_source(AIRFLOW_2, "rockets.py")
    changes = difflib.ndiff(AIRFLOW_2.splitlines(), after.splitlines())
    assert [line for line in changes if line[:2] in ("- ", "+ ")] == CHANGES
    compile(after, "rockets.py", "exec")
    # what dagwatch has no counterpart for stays, and is reported with its line
    assert [(u.line, u.code) for u in unmapped] == [
        (14, "from airflow.providers.postgres.hooks.postgres import PostgresHook")
    ]
    assert "'postgres' provider" in unmapped[0].reason
    assert str(unmapped[0]).startswith("rockets.py:14: cannot map `from airflow.providers")


def test_airflow_3_sdk_standard_provider_and_models_paths_map():
    source = (
        "from airflow.sdk import DAG, task, Variable, BaseOperator\n"
        "from airflow.providers.standard.operators.python import PythonOperator\n"
        "from airflow.models.baseoperator import chain\n"
        "from airflow.hooks.base import BaseHook\n"
        "from airflow.sensors.base import BaseSensorOperator\n"
        "from airflow.utils.trigger_rule import TriggerRule\n"
        "from airflow.utils.decorators import apply_defaults\n"
    )
    after, unmapped = migrate_source(source)
    assert unmapped == []
    assert after == (
        "from engine import DAG, task, Variable, BaseOperator\n"
        "from engine import PythonOperator\n"
        "from engine import chain\n"
        "from engine import BaseHook\n"
        "from engine import BaseSensorOperator\n"
        "from engine import TriggerRule\n"
        "from engine.utils.decorators import apply_defaults\n"
    )


def test_partly_mappable_imports_keep_the_rest_and_report_it():
    source = (
        "from airflow.models import DAG, DagBag  # models\n"
        "from airflow.plugins_manager import AirflowPlugin\n"
        "from airflow.operators.python import *\n"
    )
    after, unmapped = migrate_source(source)
    assert after.splitlines() == [
        "from engine import DAG  # models",
        "from airflow.models import DagBag",
        "from airflow.plugins_manager import AirflowPlugin",
        "from airflow.operators.python import *",
    ]
    assert [u.line for u in unmapped] == [1, 2, 3]
    assert "entry point" in unmapped[1].reason and "star import" in unmapped[2].reason


def test_aliases_are_kept_and_not_renamed():
    after, unmapped = migrate_source(
        "from airflow.exceptions import AirflowSkipException as Skip\nraise Skip()\n"
    )
    assert after == "from engine import SkipTask as Skip\nraise Skip()\n" and unmapped == []


def test_non_airflow_files_are_unchanged_and_bad_files_are_reported(tmp_path):
    plain = tmp_path / "plain.py"
    plain.write_text("import os\nfrom engine import DAG\n")
    broken = tmp_path / "sub" / "broken.py"
    broken.parent.mkdir()
    broken.write_text("from airflow import DAG\ndef (:\n")
    assert list(python_files([tmp_path])) == [plain, broken]
    assert not migrate_file(plain).changed
    result = migrate_file(broken)
    assert result.error and "not valid Python" in result.error


def test_the_diff_is_a_unified_diff_of_the_file(tmp_path):
    path = tmp_path / "dag.py"
    path.write_text("from airflow import DAG\nx = 1\n")
    diff = migrate_file(path).diff()
    assert diff.splitlines()[:2] == [f"--- {path}", f"+++ {path}"]
    assert "-from airflow import DAG\n+from engine import DAG\n" in diff
