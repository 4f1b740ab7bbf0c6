"""Airflow 3 authoring features dagwatch lacked: display names, XComArg, a mapped classic
operator's .output, templates_exts on @task, render_template, custom priority strategies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine import (
    DAG,
    BashOperator,
    PriorityWeightStrategy,
    PythonOperator,
    XComArg,
    task,
)
from engine.exceptions import DagDefinitionError
from engine.parsing.serialization import SerializedDAG, serialize_dag
from engine.sdk import priority as priority_module
from engine.sdk.templating import make_jinja_env

START = datetime(2024, 1, 1, tzinfo=UTC)


def test_display_names_are_serialized_and_ids_stay():
    with DAG("sales_v2", dag_display_name="Sales (v2) 💶") as dag:
        BashOperator(task_id="load", bash_command="true", task_display_name="Load the ledger")
    data = serialize_dag(dag)
    assert data["dag_display_name"] == "Sales (v2) 💶" and data["dag_id"] == "sales_v2"
    assert data["tasks"][0]["task_display_name"] == "Load the ledger"
    assert data["tasks"][0]["task_id"] == "load"
    assert SerializedDAG.from_dict(data).get_task("load").task_display_name == "Load the ledger"


def test_a_blank_display_name_is_a_definition_error():
    with pytest.raises(DagDefinitionError, match="dag_display_name"):
        DAG("a", dag_display_name=" ")
    with DAG("b"), pytest.raises(DagDefinitionError, match="task_display_name"):
        BashOperator(task_id="t", bash_command="true", task_display_name="")


def test_xcomarg_is_importable_from_engine_and_makes_an_edge():
    with DAG("a") as dag:
        first = PythonOperator(task_id="first", python_callable=lambda: 1)
        second = BashOperator(task_id="second", bash_command=XComArg(first))
    assert isinstance(first.output, XComArg)
    assert dag.get_task("second").upstream_task_ids == {"first"}
    assert second.bash_command.operator is first


def test_a_mapped_classic_operator_has_output_and_reads_as_its_task():
    with DAG("a") as dag:
        mapped = BashOperator.partial(task_id="echo").expand(bash_command=["echo 1", "echo 2"])
        total = PythonOperator(task_id="total", python_callable=sum, op_args=[mapped.output])
    assert isinstance(mapped.output, XComArg) and mapped.output.operator is mapped.operator
    assert mapped.task_id == "echo" and mapped.is_mapped
    assert dag.get_task("total").upstream_task_ids == {"echo"}
    assert total.op_args[0].operator.task_id == "echo"


def test_templates_exts_on_a_decorated_task_renders_template_files(tmp_path):
    (tmp_path / "query.sql").write_text("select * from t where day = '{{ ds }}'")
    with DAG("a", template_searchpath=str(tmp_path)) as dag:

        @task(templates_exts=[".sql"])
        def run(sql: str) -> str:
            return sql

        run("query.sql")
    operator = dag.get_task("run").prepare_for_execution()
    operator.render_template_fields({"ds": "2024-03-05"}, make_jinja_env(dag))
    assert operator.op_args == ["select * from t where day = '2024-03-05'"]
    with DAG("b"), pytest.raises(DagDefinitionError, match="templates_exts"):
        task(templates_exts=["sql"])(lambda: None)()


def test_templates_exts_on_python_operator():
    with DAG("a"):
        operator = PythonOperator(
            task_id="t", python_callable=print, op_args=["x.sql"], templates_exts=[".sql"]
        )
    assert operator.template_ext == (".sql",)


def test_render_template_on_an_operator(tmp_path):
    (tmp_path / "hello.sh").write_text("echo {{ params.who }}")
    with DAG("a", template_searchpath=str(tmp_path)) as dag:
        operator = BashOperator(task_id="t", bash_command="true")
    context = {"ds": "2024-03-05", "params": {"who": "you"}}
    assert operator.render_template("day {{ ds }}", context) == "day 2024-03-05"
    assert operator.render_template(["{{ ds }}", {"k": "{{ ds }}"}], context) == [
        "2024-03-05",
        {"k": "2024-03-05"},
    ]
    assert operator.render_template("hello.sh", context, make_jinja_env(dag)) == "echo you"


class _TryBased(PriorityWeightStrategy):
    """Airflow's example strategy: the first try weighs most."""

    def get_weight(self, ti):
        return max(3 - ti.try_number + 1, 1)


class _ByName(PriorityWeightStrategy):
    def get_weight(self, ti):
        return 100 if ti.task_id.startswith("urgent") else 1


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(priority_module, "_registered", {})
    for cls in (_TryBased, _ByName):
        priority_module.register_priority_weight_strategy(cls)
    return priority_module.strategy_path


def test_custom_priority_strategies_are_computed_when_the_dag_is_parsed(registered):
    with DAG("a") as dag:
        BashOperator(task_id="urgent_fix", bash_command="true", weight_rule=_ByName())
        BashOperator(task_id="later", bash_command="true", weight_rule=registered(_ByName))
        BashOperator(task_id="first", bash_command="true", weight_rule=_TryBased())
    tasks = {t["task_id"]: t for t in serialize_dag(dag)["tasks"]}
    assert tasks["urgent_fix"]["priority_weight_total"] == 100
    assert tasks["later"]["priority_weight_total"] == 1
    assert tasks["first"]["priority_weight_total"] == 4
    assert tasks["urgent_fix"]["weight_rule"] == registered(_ByName)


def test_an_unregistered_strategy_or_a_bad_weight_is_a_definition_error(registered, monkeypatch):
    class Unknown(PriorityWeightStrategy):
        def get_weight(self, ti):
            return 1

    with DAG("a"), pytest.raises(DagDefinitionError, match="priority_weight_strategies"):
        BashOperator(task_id="t", bash_command="true", weight_rule=Unknown())

    class Bad(PriorityWeightStrategy):
        def get_weight(self, ti):
            return "high"

    priority_module.register_priority_weight_strategy(Bad)
    with DAG("b") as dag:
        BashOperator(task_id="t", bash_command="true", weight_rule=Bad())
    with pytest.raises(DagDefinitionError, match="not an int"):
        serialize_dag(dag)
