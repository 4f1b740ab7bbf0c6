"""Dynamic task mapping at definition time: partial/expand/expand_kwargs on @task and on
classic operators, mapped task groups, the serialized spec, and clear errors."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from engine import DAG, BashOperator, task, task_group
from engine.exceptions import DagDefinitionError, TaskError
from engine.parsing.serialization import SerializedDAG, serialize_dag
from engine.scheduling.deps import decide, states_of
from engine.sdk.mapping import KWARGS, PRODUCT, ExpandInput, MappedOperator, expanded_length
from engine.states import TaskState, combined_state

S, F, N, SK, R, RM, UF = (
    TaskState.SUCCESS,
    TaskState.FAILED,
    TaskState.NONE,
    TaskState.SKIPPED,
    TaskState.RUNNING,
    TaskState.REMOVED,
    TaskState.UPSTREAM_FAILED,
)


@task
def make():
    return [1, 2, 3]


@task
def add(x, y=0):
    return x + y


def test_expand_on_a_task_makes_a_mapped_operator_downstream_of_its_input():
    with DAG("d", schedule=None) as dag:
        made = make()
        added = add.partial(y=1).expand(x=made)
    mapped = added.operator
    assert isinstance(mapped, MappedOperator)
    assert mapped.is_mapped and not made.operator.is_mapped
    assert mapped.upstream_task_ids == {"make"}
    spec = serialize_dag(dag)["tasks"][1]
    assert spec["operator"] == "_PythonDecoratedOperator"
    assert spec["operator_name"] == "@task"
    assert spec["mapping"] == {
        "kind": PRODUCT,
        "sources": [{"name": "x", "task_id": "make", "key": "return_value"}],
        "group": None,
    }
    assert SerializedDAG.from_dict(serialize_dag(dag)).task_dict["add"].is_mapped


def test_literal_inputs_serialize_their_lengths_not_their_values():
    with DAG("d", schedule=None) as dag:
        add.expand(x=[1, 2], y={"a": 1, "b": 2, "c": 3})
        BashOperator.partial(task_id="echo").expand_kwargs([{"bash_command": "true"}])
    tasks = {t["task_id"]: t for t in serialize_dag(dag)["tasks"]}
    assert tasks["add"]["mapping"]["sources"] == [
        {"name": "x", "length": 2},
        {"name": "y", "length": 3},
    ]
    assert tasks["echo"]["mapping"] == {
        "kind": KWARGS,
        "sources": [{"name": "*", "length": 1}],
        "group": None,
    }
    assert tasks["echo"]["operator"] == "BashOperator"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: add.expand(x=3),
            "expand() argument 'x' must be a list, a dict or a task's output",
        ),
        (lambda: add.partial(x=1).expand(x=[1]), "given to both partial() and expand()"),
        (lambda: add.expand(z=[1]), "invalid arguments for add()"),
        (lambda: add.expand(), "expand() needs at least one argument"),
        (lambda: add.expand_kwargs([1, 2]), "expand_kwargs() takes a list of dicts"),
        (lambda: BashOperator.partial(bash_command="x").expand(env=[{}]), "needs a task_id"),
    ],
)
def test_bad_mappings_are_refused_when_the_dag_is_defined(build, message):
    with (
        DAG("d", schedule=None),
        pytest.raises(DagDefinitionError, match=re.escape(message)),
    ):
        build()


def test_a_mapped_task_group_maps_every_task_in_it_and_wires_its_input():
    @task_group
    def group(name, suffix):
        return add(add(name, suffix))

    with DAG("d", schedule=None) as dag:
        group.partial(suffix="!").expand(name=make())
    serialized = serialize_dag(dag)
    tasks = {t["task_id"]: t for t in serialized["tasks"]}
    assert set(tasks) == {"make", "group.add", "group.add__1"}
    for task_id in ("group.add", "group.add__1"):
        assert tasks[task_id]["mapping"]["group"] == "group"
        assert tasks[task_id]["mapping"]["sources"][0]["task_id"] == "make"
    assert tasks["group.add"]["upstream_task_ids"] == ["make"]
    assert tasks["group.add__1"]["upstream_task_ids"] == ["group.add"]


def test_a_mapped_task_inside_a_mapped_group_is_refused():
    @task_group
    def group(name):
        add.expand(x=[1, 2])

    with DAG("d", schedule=None), pytest.raises(DagDefinitionError, match="not supported"):
        group.expand(name=["a"])


def test_elements_follow_the_product_order_and_expand_kwargs_elements():
    product = ExpandInput(PRODUCT, {"a": ["x", "y"], "b": [1, 2, 3]}, "t")
    ti = SimpleNamespace(map_index=0)
    assert [product.element({"ti": ti}, i) for i in range(6)] == [
        {"a": a, "b": b} for a in "xy" for b in (1, 2, 3)
    ]
    by_dict = ExpandInput(PRODUCT, {"kv": {"k": 1, "j": 2}}, "t")
    assert by_dict.element({"ti": ti}, 1) == {"kv": ("j", 2)}
    kwargs = ExpandInput(KWARGS, [{"a": 1}, {"a": 2, "b": 3}], "t")
    assert kwargs.element({"ti": ti}, 1) == {"a": 2, "b": 3}
    with pytest.raises(TaskError, match="map index 2 is out of range"):
        kwargs.element({"ti": ti}, 2)


def test_expanded_length_multiplies_inputs_and_explains_what_cannot_be_mapped():
    sources = [{"name": "x", "task_id": "t", "key": "return_value"}, {"name": "y", "length": 3}]
    assert expanded_length(sources, PRODUCT, {("t", "return_value"): [1, 2]}, {}) == 6
    assert expanded_length(sources, PRODUCT, {("t", "return_value"): {"a": 1}}, {}) == 3
    assert expanded_length(sources, PRODUCT, {}, {"t": 4}) == 12  # t is mapped: 4 values
    with pytest.raises(ValueError, match="returned str; only a list or a dict"):
        expanded_length(sources, PRODUCT, {("t", "return_value"): "abc"}, {})
    with pytest.raises(ValueError, match="pushed no 'return_value' XCom"):
        expanded_length(sources, PRODUCT, {}, {})


def test_combined_state_speaks_for_a_mapped_task():
    assert combined_state([S, R, N]) is R
    assert combined_state([S, F, S]) is F
    assert combined_state([SK, SK]) is SK
    assert combined_state([S, SK]) is S
    assert combined_state([S, RM]) is S
    assert combined_state([RM]) is RM


def _row(task_id, map_index, state):
    return SimpleNamespace(task_id=task_id, map_index=map_index, state=state)


def _plan(build):
    with DAG("d", schedule=None) as dag:
        build()
    return SerializedDAG.from_dict(serialize_dag(dag))


def test_each_mapped_instance_counts_as_one_upstream_state():
    @task
    def after(values):
        return values

    plan = _plan(lambda: after(add.expand(x=make())))
    rows = [_row("make", -1, S), *(_row("add", i, s) for i, s in enumerate([S, F, S]))]
    states, instances = states_of([*rows, _row("after", -1, N)])
    assert states["add"] is F
    assert decide(plan, states, instances=instances) == {"after": UF}
    rows[2] = _row("add", 1, R)
    states, instances = states_of([*rows, _row("after", -1, N)])
    assert decide(plan, states, instances=instances) == {}  # waits for the running instance


def test_in_a_mapped_group_an_instance_waits_only_for_its_own_index():
    @task_group
    def group(name):
        return add(add(name))

    plan = _plan(lambda: group.expand(name=["a", "b", "c"]))
    first, second = "group.add", "group.add__1"
    rows = [
        *(_row(first, i, s) for i, s in enumerate([S, F, R])),
        *(_row(second, i, N) for i in range(3)),
    ]
    states, instances = states_of(rows)
    assert decide(plan, states, instances=instances) == {
        (second, 0): TaskState.SCHEDULED,
        (second, 1): UF,
    }


def test_an_unexpanded_mapped_task_waits_for_its_input_and_fails_without_it():
    @task(trigger_rule="all_done")
    def each(x):
        return x

    plan = _plan(lambda: each.expand(x=make()))
    assert decide(plan, {"make": R, "each": N}) == {}
    assert decide(plan, {"make": S, "each": N}) == {}  # expansion, not scheduling, is next
    assert decide(plan, {"make": F, "each": N}) == {"each": UF}
