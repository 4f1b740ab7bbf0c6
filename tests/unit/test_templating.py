"""Template rendering of operator fields, Jinja environment, date context and macros."""

from __future__ import annotations

import datetime as dt
from collections import namedtuple

import pendulum
import pytest

from engine import DAG, BaseOperator, BashOperator, EmptyOperator
from engine.exceptions import TemplateError
from engine.sdk.params import DagParam
from engine.sdk.templating import (
    date_context,
    ds_add,
    ds_format,
    macros,
    make_jinja_env,
    render_template_fields,
)

Point = namedtuple("Point", ["x", "y"])


class Nested:
    template_fields = ("query",)

    def __init__(self, query: str) -> None:
        self.query = query


class Templated(BaseOperator):
    template_fields = ("text", "structure", "untouched")

    def __init__(self, *, text="", structure=None, untouched=None, **kwargs):
        super().__init__(**kwargs)
        self.text = text
        self.structure = structure
        self.untouched = untouched

    def execute(self, context):
        return self.text


class FakeTI:
    def __init__(self, xcoms):
        self.xcoms = xcoms

    def xcom_pull(self, task_ids=None, key="return_value", default=None):
        return self.xcoms.get((task_ids, key), default)


CONTEXT = {"ds": "2026-03-01", "params": {"who": "ann", "n": 3}, "items": ["a", "b"]}


def test_renders_nested_structures_in_place():
    op = Templated(
        task_id="t",
        text="run {{ ds }}",
        structure={
            "list": ["{{ params.who }}", 1, None],
            "tuple": ("{{ params.n * 2 }}",),
            "set": {"{{ ds }}"},
            "point": Point("{{ params.n }}", "y"),
            "nested": {"deeper": ["{% for i in items %}{{ i }}{% endfor %}"]},
            "object": Nested("select '{{ ds }}'"),
        },
    )
    render_template_fields(op, CONTEXT, make_jinja_env(None))
    assert op.text == "run 2026-03-01"
    structure = op.structure
    assert structure["list"] == ["ann", 1, None]
    assert structure["tuple"] == ("6",)
    assert structure["set"] == {"2026-03-01"}
    assert structure["point"] == Point("3", "y") and isinstance(structure["point"], Point)
    assert structure["nested"] == {"deeper": ["ab"]}
    assert structure["object"].query == "select '2026-03-01'"
    assert op.untouched is None


def test_template_error_names_task_and_field():
    op = Templated(task_id="broken", text="{{ missing_name }}")
    with pytest.raises(TemplateError) as info:
        op.render_template_fields(CONTEXT, make_jinja_env(None))
    message = str(info.value)
    assert message.startswith("task 'broken': could not render field 'text': ")
    assert "'missing_name' is undefined" in message


def test_syntax_error_message_has_the_line():
    op = Templated(task_id="syntax", structure=["ok", "line one\n{% if %}"])
    with pytest.raises(
        TemplateError, match=r"field 'structure': TemplateSyntaxError: .*\(line 2\)"
    ):
        op.render_template_fields(CONTEXT, make_jinja_env(None))


def test_missing_template_field_attribute():
    class Wrong(BaseOperator):
        template_fields = ("nope",)

    with pytest.raises(TemplateError, match="template field 'nope' is not an attribute"):
        Wrong(task_id="w").render_template_fields(CONTEXT)


def test_xcom_args_and_dag_params_resolve_without_rendering_the_value():
    with DAG("resolve"):
        producer = EmptyOperator(task_id="producer")
        op = Templated(task_id="t", structure=[producer.output, DagParam("who")])
    ti = FakeTI({("producer", "return_value"): "{{ not rendered }}"})
    op.render_template_fields({**CONTEXT, "ti": ti}, make_jinja_env(None))
    assert op.structure == ["{{ not rendered }}", "ann"]
    assert op.upstream_task_ids == {"producer"}


def test_template_files_are_loaded_from_the_dag_folder_and_searchpath(tmp_path):
    dag_folder = tmp_path / "dags"
    extra = tmp_path / "sql"
    dag_folder.mkdir()
    extra.mkdir()
    (dag_folder / "script.sh").write_text("echo {{ ds }}\n")
    (extra / "query.sh").write_text("echo {{ params.who }}")
    with DAG("files", template_searchpath=str(extra)) as d:
        from_dag_folder = BashOperator(task_id="a", bash_command="script.sh")
        from_searchpath = BashOperator(task_id="b", bash_command="query.sh")
        inline = BashOperator(task_id="c", bash_command="echo hi")
    d.fileloc = str(dag_folder / "my_dag.py")
    env = make_jinja_env(d)
    for op in (from_dag_folder, from_searchpath, inline):
        op.render_template_fields(CONTEXT, env)
    assert from_dag_folder.bash_command == "echo 2026-03-01\n"  # trailing newline kept
    assert from_searchpath.bash_command == "echo ann"
    assert inline.bash_command == "echo hi"


def test_missing_template_file_is_a_template_error():
    with DAG("nofile") as d:
        op = BashOperator(task_id="a", bash_command="absent.sh")
    with pytest.raises(TemplateError, match="field 'bash_command': TemplateNotFound"):
        op.render_template_fields(CONTEXT, make_jinja_env(d))


def test_native_rendering():
    with DAG("native", render_template_as_native_obj=True) as d:
        op = Templated(task_id="t", text="{{ params.n + 1 }}", structure=["{{ items }}"])
    op.render_template_fields(CONTEXT, make_jinja_env(d))
    assert op.text == 4
    assert op.structure == [["a", "b"]]


def test_default_env_renders_strings_and_has_filters():
    env = make_jinja_env(None)
    when = pendulum.datetime(2026, 3, 1, 4, 5, 6)
    rendered = env.from_string(
        "{{ 1 + 1 }}|{{ when | ds }}|{{ when | ds_nodash }}|{{ when | ts_nodash_with_tz }}"
    ).render(when=when)
    assert rendered == "2|2026-03-01|20260301|20260301T040506+0000"


def test_date_context_matches_airflow_formats():
    context = date_context(
        pendulum.datetime(2026, 3, 1, 4, 5, 6, tz="Europe/Amsterdam"),
        dt.datetime(2026, 3, 1, 3, 5, 6),
        dt.datetime(2026, 3, 2, 3, 5, 6),
    )
    assert context["ds"] == "2026-03-01"
    assert context["ds_nodash"] == "20260301"
    assert context["ts"] == "2026-03-01T03:05:06+00:00"
    assert context["ts_nodash"] == "20260301T030506"
    assert context["ts_nodash_with_tz"] == "20260301T030506+0000"
    assert context["logical_date"] == pendulum.datetime(2026, 3, 1, 3, 5, 6)
    assert context["logical_date"].timezone_name == "UTC"
    assert context["data_interval_start"] == pendulum.datetime(2026, 3, 1, 3, 5, 6)
    assert context["data_interval_end"] == pendulum.datetime(2026, 3, 2, 3, 5, 6)
    assert context["macros"] is macros


def test_date_context_defaults_the_interval_to_the_logical_date():
    context = date_context(dt.datetime(2026, 1, 1))
    assert context["data_interval_start"] == context["data_interval_end"] == context["logical_date"]


def test_macros():
    assert ds_add("2026-01-30", 3) == "2026-02-02"
    assert ds_add("2026-03-01", -1) == "2026-02-28"
    assert ds_add("2026-03-01", 0) == "2026-03-01"
    assert ds_format("2026-03-01", "%Y-%m-%d", "%d/%m/%y") == "01/03/26"
    env = make_jinja_env(None)
    template = (
        "{{ macros.ds_add(ds, 1) }} {{ macros.datetime(2026, 1, 2).year }} "
        "{{ macros.timedelta(days=1).days }} {{ macros.json.dumps([1]) }} "
        "{{ macros.uuid.UUID(int=0) }}"
    )
    rendered = env.from_string(template).render(ds="2026-03-01", macros=macros)
    assert rendered == "2026-03-02 2026 1 [1] 00000000-0000-0000-0000-000000000000"
    assert 0 <= macros.random() < 1 and macros.time.time() > 0


def test_rendering_a_prepared_copy_leaves_the_definition_alone():
    with DAG("copy"):
        op = Templated(task_id="t", text="{{ ds }}", structure={"k": ["{{ ds }}"]})
    run_copy = op.prepare_for_execution()
    run_copy.render_template_fields(CONTEXT)
    assert run_copy.structure == {"k": ["2026-03-01"]}
    assert op.text == "{{ ds }}" and op.structure == {"k": ["{{ ds }}"]}
