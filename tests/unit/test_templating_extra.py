"""User-defined macros and filters, and how they combine with strict undefined, template
files and native rendering; the DAG's serialized form is unaffected by them."""

from __future__ import annotations

import json

import pytest

from engine import DAG, BashOperator, dag, task
from engine.exceptions import DagDefinitionError, TemplateError
from engine.parsing.serialization import SerializedDAG, serialize_dag
from engine.sdk.templating import make_jinja_env
from engine.store.dags import dag_hash

CONTEXT = {"ds": "2026-03-01", "params": {"who": "ann"}}


def shout(value: str, mark: str = "!") -> str:
    return f"{value.upper()}{mark}"


def macro_dag(**kwargs) -> DAG:
    return DAG(
        "macros",
        user_defined_macros={"env_name": "prod", "double": lambda x: x * 2, "ds": "shadowed"},
        user_defined_filters={"shout": shout, "ns.rev": lambda s: s[::-1]},
        **kwargs,
    )


def render(dag_: DAG, command: str, context=CONTEXT):
    with dag_:
        op = BashOperator(task_id=f"t{len(dag_.task_dict)}", bash_command=command)
    run_copy = op.prepare_for_execution()
    run_copy.render_template_fields(context, make_jinja_env(dag_))
    return run_copy.bash_command


def test_macros_are_template_variables_and_filters_are_filters():
    d = macro_dag()
    assert render(d, "{{ env_name }} {{ double(21) }} {{ env_name | shout }}") == "prod 42 PROD!"
    assert render(d, "{{ env_name | shout('?') }} {{ 'abc' | ns.rev }}") == "PROD? cba"
    # user filters combine with the built-in ones and with the context
    assert render(d, "{{ params.who | shout }} {{ ds | shout }}") == "ANN! 2026-03-01!"


def test_a_context_variable_wins_over_a_macro_of_the_same_name():
    assert render(macro_dag(), "{{ ds }}") == "2026-03-01"  # Airflow: macros are globals


def test_macros_and_filters_stay_with_their_dag():
    render(macro_dag(), "{{ env_name }}")
    with pytest.raises(TemplateError, match="'env_name' is undefined"):
        render(DAG("plain"), "{{ env_name }}")
    with pytest.raises(TemplateError, match="No filter named 'shout'"):
        render(DAG("plain2"), "{{ 'a' | shout }}")
    assert "shout" not in make_jinja_env(None).filters


def test_an_undefined_name_fails_naming_the_variable():
    d = macro_dag()
    with pytest.raises(TemplateError) as info:
        render(d, "echo {{ env_name }} {{ target_table }}")
    assert str(info.value) == (
        "task 't0': could not render field 'bash_command': "
        "UndefinedError: 'target_table' is undefined"
    )
    with pytest.raises(TemplateError, match="'target_table' is undefined"):
        render(d, "{{ target_table.name }}")  # attribute access on undefined: still named
    with pytest.raises(TemplateError, match="has no attribute 'missing'"):
        render(d, "{{ params.missing }}")
    # the escape hatches still work under strict undefined
    assert render(d, "{{ target_table | default('t') }}{% if nope is defined %}x{% endif %}") == (
        "t"
    )


def test_template_files_see_macros_and_filters(tmp_path):
    (tmp_path / "deploy.sh").write_text("echo {{ env_name | shout }} {{ double(2) }}\n")
    d = macro_dag(fileloc=str(tmp_path / "dag.py"))
    assert render(d, "deploy.sh") == "echo PROD! 4\n"


def test_native_rendering_keeps_what_macros_return():
    d = macro_dag(render_template_as_native_obj=True)
    assert render(d, "{{ double([1, 2]) }}") == [1, 2, 1, 2]
    assert render(d, "{{ double(21) }}") == 42


def test_the_dag_decorator_passes_them_through():
    @dag(user_defined_macros={"region": "eu"}, user_defined_filters={"shout": shout})
    def decorated():
        @task
        def show(value):
            return value

        show("{{ region | shout }}")

    built = decorated()
    run_copy = built.get_task("show").prepare_for_execution()
    run_copy.render_template_fields(CONTEXT, make_jinja_env(built))
    assert run_copy.op_args == ["EU!"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user_defined_macros": ["a"]}, "user_defined_macros must be a dict, not list"),
        ({"user_defined_macros": {"a-b": 1}}, "user_defined_macros key 'a-b' is not a valid"),
        ({"user_defined_macros": {"a.b": 1}}, "user_defined_macros key 'a.b' is not a valid"),
        ({"user_defined_macros": {1: 1}}, "user_defined_macros key 1 is not a valid"),
        ({"user_defined_filters": {"up": "upper"}}, r"user_defined_filters\['up'\] must be"),
        ({"user_defined_filters": {"a..b": str}}, "user_defined_filters key 'a..b' is not"),
    ],
)
def test_invalid_macros_and_filters_fail_when_the_dag_is_built(kwargs, message):
    with pytest.raises(DagDefinitionError, match=rf"DAG 'bad': {message}"):
        DAG("bad", **kwargs)


def test_serialization_leaves_macros_and_filters_out():
    with macro_dag() as d:
        BashOperator(task_id="t", bash_command="echo {{ env_name }}")
    with DAG("macros") as plain:
        BashOperator(task_id="t", bash_command="echo {{ env_name }}")
    plain.fileloc = d.fileloc
    data = serialize_dag(d)
    text = json.dumps(data)  # JSON-compatible although the macros are functions
    assert "env_name" not in text and "shout" not in text
    assert dag_hash(data) == dag_hash(serialize_dag(plain))
    assert SerializedDAG(json.loads(text)).task_ids == ["t"]
