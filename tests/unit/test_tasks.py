"""Operators: arguments, default_args, edges, chain, Label, task groups, copies."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from engine import (
    DAG,
    BaseOperator,
    BashOperator,
    EmptyOperator,
    Label,
    TaskGroup,
    TriggerRule,
    chain,
    task,
    task_group,
)
from engine.exceptions import DagDefinitionError, DuplicateTaskIdError


def ids(tasks):
    return [t.task_id for t in tasks]


class Greet(BaseOperator):
    template_fields = ("greeting", "names")

    def __init__(self, *, greeting: str = "hello", names=(), **kwargs):
        super().__init__(**kwargs)
        self.greeting = greeting
        self.names = list(names)

    def execute(self, context):
        return f"{self.greeting} {', '.join(self.names)}"


def test_operator_defaults():
    op = EmptyOperator(task_id="alone")
    assert op.dag is None and op.dag_id is None
    assert op.retries == 0
    assert op.retry_delay == timedelta(seconds=300)
    assert op.trigger_rule is TriggerRule.ALL_SUCCESS
    assert op.pool == "default_pool" and op.pool_slots == 1 and op.queue == "default"
    assert op.on_failure_callback == [] and op.do_xcom_push is True
    assert op.owner == "dagwatch" and op.task_group is None


def test_callbacks_normalised_to_lists():
    def cb(context):
        return None

    op = EmptyOperator(task_id="t", on_success_callback=cb, on_retry_callback=[cb, cb])
    assert op.on_success_callback == [cb]
    assert op.on_retry_callback == [cb, cb]
    assert op.on_skipped_callback == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"trigger_rule": "sometimes"},
            "task 't': invalid trigger_rule 'sometimes'; allowed: all_success, ",
        ),
        ({"retries": -1}, "task 't': retries must be an int >= 0"),
        ({"retries": 1.5}, "retries must be an int"),
        ({"pool_slots": 0}, "pool_slots must be an int >= 1"),
        ({"priority_weight": "high"}, "priority_weight must be an int"),
        ({"retry_delay": 30}, "retry_delay must be a timedelta, not 30"),
        ({"execution_timeout": 10}, "execution_timeout must be a timedelta or None"),
        ({"max_active_tis_per_dag": 0}, "max_active_tis_per_dag"),
        ({"weight_rule": "sideways"}, "weight_rule 'sideways' is invalid"),
        ({"on_failure_callback": "nope"}, "on_failure_callback must be a callable"),
        ({"colour": "red"}, "invalid arguments for EmptyOperator 't': colour"),
    ],
)
def test_invalid_arguments_are_definition_errors(kwargs, message):
    with pytest.raises(DagDefinitionError, match=message):
        EmptyOperator(task_id="t", **kwargs)


def test_unknown_trigger_rule_lists_every_allowed_rule():
    with pytest.raises(DagDefinitionError) as info:
        EmptyOperator(task_id="t", trigger_rule="nope")
    for rule in TriggerRule:
        assert rule.value in str(info.value)


def test_positional_arguments_are_refused():
    with pytest.raises(TypeError, match="keyword arguments only"):
        Greet("hi", task_id="t")


@pytest.mark.parametrize("task_id", ["", "with space", "a/b", None])
def test_invalid_task_ids(task_id):
    with pytest.raises(DagDefinitionError, match="task_id"):
        EmptyOperator(task_id=task_id)


def test_default_args_precedence_explicit_over_group_over_dag():
    dag_defaults = {"retries": 2, "owner": "dag-owner", "queue": "q1", "greeting": "hey"}
    with DAG("defaults", default_args=dag_defaults) as d:
        plain = EmptyOperator(task_id="plain")
        explicit = EmptyOperator(task_id="explicit", retries=5, queue="q9")
        custom = Greet(task_id="custom")  # subclass argument from default_args too
        with TaskGroup("g", default_args={"retries": 3, "greeting": "yo"}):
            grouped = Greet(task_id="grouped")
            grouped_explicit = Greet(task_id="grouped_explicit", retries=0, greeting="hi")
            with TaskGroup("inner", default_args={"queue": "q2"}):
                nested = EmptyOperator(task_id="nested")
    assert (plain.retries, plain.owner, plain.queue) == (2, "dag-owner", "q1")
    assert (explicit.retries, explicit.queue) == (5, "q9")
    assert custom.greeting == "hey"
    assert (grouped.retries, grouped.greeting) == (3, "yo")
    assert (grouped_explicit.retries, grouped_explicit.greeting) == (0, "hi")
    assert (nested.retries, nested.queue, nested.owner) == (3, "q2", "dag-owner")
    assert d.owner == "dag-owner"


def test_default_args_unknown_keys_are_ignored():
    with DAG("ignore", default_args={"email": "x@example.com", "start_date": None}):
        op = EmptyOperator(task_id="t")
    assert not hasattr(op, "email")


def test_task_owner_defaults_to_dag_owner():
    with DAG("owned", owner="team-a"):
        op = EmptyOperator(task_id="t")
    assert op.owner == "team-a"


def test_task_params_overlay_dag_params():
    with DAG("params", params={"a": 1, "b": 2}):
        op = EmptyOperator(task_id="t", params={"b": 20, "c": 30})
    assert op.params.resolve({}) == {"a": 1, "b": 20, "c": 30}
    assert EmptyOperator(task_id="loose", params={"x": 1}).params.resolve({}) == {"x": 1}


def test_edges_with_operators_and_lists():
    with DAG("edges"):
        a, b, c, d, e = (EmptyOperator(task_id=x) for x in "abcde")
        result = a >> [b, c]
        assert result == [b, c]
        assert ([b, c] >> d) is d
        assert (e << d) is d
        assert ([a] << e) is e  # e runs before a
    assert a.downstream_task_ids == {"b", "c"}
    assert d.upstream_task_ids == {"b", "c"}
    assert e.upstream_task_ids == {"d"}
    assert a.upstream_task_ids == {"e"}


def test_set_upstream_and_downstream():
    with DAG("set"):
        a, b, c = (EmptyOperator(task_id=x) for x in "abc")
        b.set_upstream(a)
        b.set_downstream([c])
    assert ids(b.upstream_list) == ["a"] and ids(b.downstream_list) == ["c"]


def test_flat_relatives():
    with DAG("flat"):
        a, b, c, d, x = (EmptyOperator(task_id=t) for t in "abcdx")
        a >> b >> c
        a >> d
        x >> c
    assert a.get_flat_relatives(upstream=False) == {"b", "c", "d"}
    assert c.get_flat_relative_ids(upstream=True) == {"a", "b", "x"}
    assert a.get_direct_relative_ids() == {"b", "d"}


def test_dependency_on_non_task_is_a_type_error():
    with DAG("bad"):
        a = EmptyOperator(task_id="a")
        with pytest.raises(TypeError, match="cannot set a dependency on str"):
            a >> "b"


def test_edge_between_two_dags_names_both():
    with DAG("one"):
        a = EmptyOperator(task_id="a")
    with DAG("two"):
        b = EmptyOperator(task_id="b")
    with pytest.raises(DagDefinitionError) as info:
        a >> b
    message = str(info.value)
    for part in ("'a'", "'b'", "'one'", "'two'"):
        assert part in message


def test_edge_attaches_a_dagless_task_to_the_dag():
    with DAG("adopt") as d:
        a = EmptyOperator(task_id="a")
    loose = EmptyOperator(task_id="loose")
    a >> loose
    assert loose.dag is d and d.get_task("loose") is loose


def test_chain_sequences_and_pairwise_lists():
    with DAG("chain"):
        start, end = EmptyOperator(task_id="start"), EmptyOperator(task_id="end")
        x1, x2, y1, y2 = (EmptyOperator(task_id=t) for t in ("x1", "x2", "y1", "y2"))
        chain(start, [x1, x2], [y1, y2], end)
    assert start.downstream_task_ids == {"x1", "x2"}
    assert x1.downstream_task_ids == {"y1"} and x2.downstream_task_ids == {"y2"}
    assert end.upstream_task_ids == {"y1", "y2"}


def test_chain_rejects_lists_of_different_length():
    with DAG("chain2"):
        a, b, c = (EmptyOperator(task_id=t) for t in "abc")
        with pytest.raises(DagDefinitionError, match="length 1 and 2"):
            chain([a], [b, c])


def test_label_records_edge_info():
    with DAG("labels") as d:
        a, b, c, e = (EmptyOperator(task_id=t) for t in "abce")
        a >> Label("when ready") >> b
        [b, c] >> Label("join") >> e
        a >> Label("both") >> [b, c]
    assert d.edge_info("a", "b") == {"label": "both"}  # the later label wins
    assert d.edge_info("b", "e") == {"label": "join"}
    assert d.edge_info("c", "e") == {"label": "join"}
    assert d.edge_info("a", "c") == {"label": "both"}
    assert e.upstream_task_ids == {"b", "c"}


def test_label_must_sit_between_tasks():
    with DAG("labels2"):
        a = EmptyOperator(task_id="a")
        with pytest.raises(TypeError, match="between two tasks"):
            a >> Label("x") >> Label("y")


def test_task_group_prefixes_and_nesting():
    with DAG("groups") as d:
        with TaskGroup("outer") as outer:
            first = EmptyOperator(task_id="first")
            with TaskGroup("inner") as inner:
                deep = EmptyOperator(task_id="deep")
        with TaskGroup("flat", prefix_group_id=False):
            unprefixed = EmptyOperator(task_id="unprefixed")
    assert first.task_id == "outer.first" and first.task_group == "outer"
    assert deep.task_id == "outer.inner.deep" and deep.task_group == "outer.inner"
    assert inner.group_id == "outer.inner" and inner.parent_group is outer
    assert unprefixed.task_id == "unprefixed" and unprefixed.task_group == "flat"
    assert set(d.task_group_dict) == {"outer", "outer.inner", "flat"}
    assert outer.task_ids == {"outer.first", "outer.inner.deep"}


def test_task_group_edges_use_roots_and_leaves():
    with DAG("group_edges"):
        start = EmptyOperator(task_id="start")
        with TaskGroup("g") as g:
            a, b, _ = (EmptyOperator(task_id=t) for t in "abc")
            a >> b
        end = EmptyOperator(task_id="end")
        start >> g >> end
    assert ids(g.roots) == ["g.a", "g.c"]
    assert ids(g.leaves) == ["g.b", "g.c"]
    assert start.downstream_task_ids == {"g.a", "g.c"}
    assert end.upstream_task_ids == {"g.b", "g.c"}


def test_task_group_errors():
    with pytest.raises(DagDefinitionError, match="must be created inside a DAG"):
        TaskGroup("nowhere")
    with DAG("group_errors"):
        EmptyOperator(task_id="taken")
        with pytest.raises(DagDefinitionError, match=r"group_id 'bad\.id' is invalid"):
            TaskGroup("bad.id")
        with pytest.raises(DuplicateTaskIdError, match="group id 'taken'"):
            TaskGroup("taken")
        TaskGroup("g")
        with pytest.raises(DuplicateTaskIdError, match="group id 'g'"):
            TaskGroup("g")


def test_task_group_decorator_returns_last_task_or_group():
    with DAG("tg_deco") as d:

        @task_group
        def section():
            """Does a section."""
            a = EmptyOperator(task_id="a")
            b = EmptyOperator(task_id="b")
            a >> b
            return b

        @task_group(group_id="quiet", tooltip="tip")
        def quiet():
            EmptyOperator(task_id="x")

        start = EmptyOperator(task_id="start")
        returned = section()
        group = quiet()
        start >> returned
        returned >> group
        section()  # second call gets a suffixed group id
    assert returned.task_id == "section.b"
    assert isinstance(group, TaskGroup) and group.tooltip == "tip"
    assert d.task_group_dict["section"].tooltip == "Does a section."
    assert start.downstream_task_ids == {"section.b"}
    assert d.get_task("section.b").downstream_task_ids == {"quiet.x"}
    assert "section__1.a" in d.task_dict


def test_task_group_decorator_with_taskflow_inside():
    with DAG("tg_flow") as d:

        @task
        def one():
            return 1

        @task_group
        def grp():
            return one()

        first = grp()
        second = grp()
        first >> second
    assert d.task_ids == ["grp.one", "grp__1.one"]
    assert d.get_task("grp__1.one").upstream_task_ids == {"grp.one"}


def test_priority_weight_total_follows_weight_rule():
    with DAG("weights"):
        a = EmptyOperator(task_id="a", priority_weight=2)
        b = EmptyOperator(task_id="b", priority_weight=3, weight_rule="upstream")
        c = EmptyOperator(task_id="c", priority_weight=5, weight_rule="absolute")
        a >> b >> c
    assert a.priority_weight_total == 10
    assert b.priority_weight_total == 5
    assert c.priority_weight_total == 5


def test_prepare_for_execution_copies_template_fields_only():
    with DAG("copying") as d:
        op = Greet(task_id="g", names=["ann"])
        other = EmptyOperator(task_id="o")
        op >> other
    run_copy = op.prepare_for_execution()
    run_copy.names.append("bob")
    run_copy.greeting = "changed"
    assert op.names == ["ann"] and op.greeting == "hello"
    assert run_copy.dag is d and run_copy.downstream_task_ids == {"o"}
    assert d.get_task("g") is op


def test_deepcopy_keeps_the_dag_reference():
    with DAG("deep") as d:
        op = Greet(task_id="g", names=["ann"])
    clone = copy.deepcopy(op)
    assert clone is not op and clone.dag is d and clone.names == ["ann"]
    assert clone.names is not op.names


def test_base_operator_execute_must_be_implemented():
    with pytest.raises(NotImplementedError, match="BaseOperator must implement execute"):
        BaseOperator(task_id="abstract").execute({})


def test_template_fields_must_be_a_sequence():
    with pytest.raises(TypeError, match="sequences of strings"):

        class Broken(BaseOperator):
            template_fields = "bash_command"


def test_xcom_arg_in_template_field_creates_edge():
    with DAG("xcom_edge"):
        producer = EmptyOperator(task_id="producer")
        consumer = BashOperator(task_id="consumer", bash_command=producer.output)
    assert consumer.upstream_task_ids == {"producer"}
