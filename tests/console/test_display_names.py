"""The console's DAG list shows `dag_display_name` and finds DAGs by it (SQLite and
PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from console.queries import dags
from engine.parsing.parser import process_folders

DAGS = """\
from engine import DAG, EmptyOperator

with DAG("sales_v2", dag_display_name="Quarterly sales", schedule=None):
    EmptyOperator(task_id="load")

with DAG("plain", schedule=None):
    EmptyOperator(task_id="load")
"""


def test_the_dag_list_shows_and_searches_display_names(store, config):
    folder = Path(config["core.dags_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "named.py").write_text(DAGS)
    report = process_folders(store, config.with_overrides(core__load_examples=False))
    assert report.dags_found == 2
    rows = dags.list_dags(store).rows.set_index("dag_id")
    assert rows.loc["sales_v2", "display_name"] == "Quarterly sales"
    assert rows.loc["plain", "display_name"] == ""  # none: the page shows the id only
    assert list(dags.list_dags(store, search="quarterly").rows.dag_id) == ["sales_v2"]
    assert list(dags.list_dags(store, search="sales_v").rows.dag_id) == ["sales_v2"]
