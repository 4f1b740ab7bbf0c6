"""TaskFlow: @task, XComArg edges and resolution, multiple_outputs, branch, short-circuit."""

from __future__ import annotations

from typing import Any

import pytest

from engine import DAG, EmptyOperator, TaskGroup, task
from engine.exceptions import DagDefinitionError, TaskError
from engine.sdk.decorators import _PythonDecoratedOperator, infer_multiple_outputs
from engine.sdk.tasks import XComArg

_NO_DEFAULT = object()


class FakeTI:
    """Stands in for the runner's task instance: an XCom store and a skip recorder."""

    def __init__(self, xcoms: dict[tuple[str, str], Any] | None = None) -> None:
        self.xcoms = dict(xcoms or {})
        self.skipped: list[str] = []
        self.pulls: list[tuple[str, str]] = []

    def xcom_pull(self, task_ids=None, key="return_value", default=None):
        self.pulls.append((task_ids, key))
        return self.xcoms.get((task_ids, key), default)

    def xcom_push(self, key, value):
        self.xcoms[("self", key)] = value

    def skip_downstream(self, task_ids):
        self.skipped.extend(task_ids)


def test_calling_a_task_adds_an_operator_and_returns_an_xcom_arg():
    with DAG("flow") as d:

        @task(retries=3)
        def extract():
            """Pull rows."""
            return [1, 2]

        result = extract()
    assert isinstance(result, XComArg) and result.key == "return_value"
    operator = result.operator
    assert isinstance(operator, _PythonDecoratedOperator)
    assert d.get_task("extract") is operator
    assert operator.retries == 3 and operator.doc_md == "Pull rows."
    assert extract.function() == [1, 2]  # the plain function stays reachable


def test_repeated_calls_get_suffixed_ids():
    with DAG("suffix") as d:

        @task
        def step(n):
            return n

        step(1)
        step(2)
        step(3)
        with TaskGroup("g"):
            step(4)
            step(5)
    assert d.task_ids == ["step", "step__1", "step__2", "g.step", "g.step__1"]


def test_xcom_args_create_edges_also_when_nested():
    with DAG("edges") as d:

        @task
        def source():
            return 1

        @task
        def combine(values, mapping):
            return values

        a, b, c = source(), source(), source()
        combine([a, (b,)], {"k": {"deep": c}})
    assert d.get_task("combine").upstream_task_ids == {"source", "source__1", "source__2"}


def test_xcom_arg_shifts_and_key_access():
    with DAG("shift") as d:

        @task(multiple_outputs=True)
        def split():
            return {"left": 1, "right": 2}

        @task
        def use(value):
            return value

        out = split()
        plain = EmptyOperator(task_id="plain")
        out >> plain
        consumer = use(out["left"])
        assert consumer.key == "return_value"
        last = EmptyOperator(task_id="last")
        assert (consumer << last) is last
    assert d.get_task("plain").upstream_task_ids == {"split"}
    assert d.get_task("use").upstream_task_ids == {"split", "last"}
    with pytest.raises(TypeError, match="not iterable"):
        list(out)


def test_execute_resolves_xcom_args_and_passes_context_keys():
    seen = {}
    with DAG("resolve"):

        @task
        def producer():
            return 1

        @task
        def consumer(values, label, ti=None, ds=None, **context):
            seen.update(values=values, label=label, ti=ti, ds=ds, extra=sorted(context))
            return "done"

        p = producer()
        c = consumer([p, p["count"]], label="{{ ds }}")
    ti = FakeTI({("producer", "return_value"): 41, ("producer", "count"): 7})
    context = {"ti": ti, "ds": "2026-01-01", "params": {}}
    operator = c.operator.prepare_for_execution()
    operator.render_template_fields(context)
    assert operator.execute(context) == "done"
    assert seen["values"] == [41, 7]
    assert seen["label"] == "2026-01-01"  # op_kwargs strings are templates
    assert seen["ti"] is ti and seen["ds"] == "2026-01-01"
    assert seen["extra"] == ["params"]
    assert c.operator.op_kwargs["label"] == "{{ ds }}"  # the DAG's copy is untouched


def test_missing_xcom_key_is_an_error_but_missing_return_value_is_none():
    with DAG("missing"):

        @task
        def producer():
            return None

        @task
        def consumer(a, b):
            return (a, b)

        p = producer()
        c = consumer(p, p["custom"])
    ti = FakeTI()
    with pytest.raises(TaskError, match="XCom 'custom' of task 'producer' not found"):
        c.operator.execute({"ti": ti})
    assert XComArg(p.operator).resolve({"ti": ti}) is None


def test_multiple_outputs_explicit_and_inferred():
    with DAG("multi"):

        @task(multiple_outputs=True)
        def explicit():
            return {"a": 1}

        @task
        def annotated() -> dict[str, int]:
            return {"a": 1}

        @task
        def plain() -> list:
            return []

        e, a, p = explicit(), annotated(), plain()
    assert e.operator.multiple_outputs is True
    assert a.operator.multiple_outputs is True
    assert p.operator.multiple_outputs is False
    assert e.operator.execute({"ti": FakeTI()}) == {"a": 1}


def test_multiple_outputs_requires_a_dict():
    with DAG("multi_bad"):

        @task(multiple_outputs=True)
        def wrong():
            return [1, 2]

        w = wrong()
    with pytest.raises(TaskError, match="multiple_outputs=True but returned list"):
        w.operator.execute({"ti": FakeTI()})


def test_infer_multiple_outputs_from_string_annotations():
    def f() -> dict[str, Undefined]:  # noqa: F821 - unresolvable on purpose
        return {}

    def g() -> Mapping:  # noqa: F821 - not imported: stays a string
        return {}

    def h() -> int:
        return 1

    assert infer_multiple_outputs(f) is True
    assert infer_multiple_outputs(g) is True
    assert infer_multiple_outputs(h) is False


def test_override_changes_operator_arguments():
    with DAG("override") as d:

        @task(retries=1)
        def job():
            return 1

        job()
        job.override(task_id="custom", retries=4, queue="fast")()
        job.override(multiple_outputs=True)()
    custom = d.get_task("custom")
    assert (custom.retries, custom.queue) == (4, "fast")
    assert d.get_task("job").retries == 1
    assert d.get_task("job__1").multiple_outputs is True
    assert d.task_ids == ["job", "custom", "job__1"]


def test_call_argument_errors_at_definition_time():
    with DAG("args"):

        @task
        def needs(a, b, ti=None):
            return a

        with pytest.raises(DagDefinitionError, match=r"task 'needs': needs\(\) is missing .*'b'"):
            needs(1)
        with pytest.raises(DagDefinitionError, match="invalid arguments for needs"):
            needs(1, 2, c=3)

        @task
        def context_only(ti, params):
            return ti

        context_only()  # context keys need no value at definition time


def test_positional_argument_clashing_with_context_key():
    with DAG("clash"):

        @task
        def f(ds):
            return ds

        bad = f("x")
    with pytest.raises(TaskError, match="argument 'ds' is given positionally"):
        bad.operator.execute({"ds": "2026-01-01", "ti": FakeTI()})


def test_branch_skips_direct_downstream_not_chosen():
    with DAG("branching"):

        @task.branch
        def choose():
            return "left"

        left = EmptyOperator(task_id="left")
        right = EmptyOperator(task_id="right")
        after_right = EmptyOperator(task_id="after_right")
        b = choose()
        b >> [left, right]
        right >> after_right
    ti = FakeTI()
    assert b.operator.execute({"ti": ti}) == "left"
    assert ti.skipped == ["right"]


def test_branch_keeps_a_join_reachable_from_the_chosen_branch():
    with DAG("join"):

        @task.branch
        def choose():
            return ["work"]

        work = EmptyOperator(task_id="work")
        join = EmptyOperator(task_id="join")
        other = EmptyOperator(task_id="other")
        b = choose()
        b >> [work, join, other]
        work >> join
    ti = FakeTI()
    b.operator.execute({"ti": ti})
    assert ti.skipped == ["other"]


def test_branch_to_a_task_group_follows_its_roots():
    with DAG("group_branch"):

        @task.branch
        def choose():
            return "grp"

        with TaskGroup("grp") as grp:
            first = EmptyOperator(task_id="first")
            second = EmptyOperator(task_id="second")
            first >> second
        skipped = EmptyOperator(task_id="skipped")
        b = choose()
        b >> [grp, skipped]
    ti = FakeTI()
    b.operator.execute({"ti": ti})
    assert ti.skipped == ["skipped"]


def test_branch_none_skips_everything_and_invalid_ids_fail():
    with DAG("branch_edge"):

        @task.branch
        def choose(target):
            return target

        a = EmptyOperator(task_id="a")
        nothing = choose(None)
        nothing >> a
        invalid = choose("nope")
        invalid >> EmptyOperator(task_id="b")
    ti = FakeTI()
    nothing.operator.execute({"ti": ti})
    assert ti.skipped == ["a"]
    with pytest.raises(TaskError, match="unknown task id\\(s\\) 'nope'"):
        invalid.operator.execute({"ti": FakeTI()})


def test_short_circuit_decorator():
    with DAG("short"):

        @task.short_circuit
        def check(ok):
            return ok

        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def gentle(ok):
            return ok

        stop = check(False)
        go = check(True)
        soft = gentle(0)
        a, b, c, d = (EmptyOperator(task_id=t) for t in "abcd")
        stop >> a >> b
        go >> c
        soft >> d >> EmptyOperator(task_id="e")
    ti = FakeTI()
    assert stop.operator.execute({"ti": ti}) is False
    assert ti.skipped == ["a", "b"]
    ti = FakeTI()
    assert go.operator.execute({"ti": ti}) is True
    assert ti.skipped == []
    ti = FakeTI()
    soft.operator.execute({"ti": ti})
    assert ti.skipped == ["d"]
