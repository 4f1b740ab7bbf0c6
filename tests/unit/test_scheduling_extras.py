"""max_active_tis_per_dagrun, wait_for_downstream and weight_rule as pure logic: task
arguments, their serialized form, the queue's limit, the past check and the priorities."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine import DAG, EmptyOperator
from engine.exceptions import DagDefinitionError
from engine.parsing.serialization import SerializedDAG, serialize_dag
from engine.scheduling.deps import decide, past_task_ids, why_waiting
from engine.scheduling.limits import TaskLimits, WaitReason, describe, select_executable
from engine.sdk.trigger_rules import TriggerRule, evaluate
from engine.states import TaskState
from engine.store.scheduling import Occupancy, TiRow

S, F, SK, N, R = (
    TaskState.SUCCESS,
    TaskState.FAILED,
    TaskState.SKIPPED,
    TaskState.NONE,
    TaskState.RUNNING,
)
RUN = TaskState.SCHEDULED
T0 = datetime(2026, 1, 10, tzinfo=UTC)

# -- task arguments --------------------------------------------------------------------


def test_wait_for_downstream_implies_depends_on_past():
    with DAG("wfd"):
        waiting = EmptyOperator(task_id="waiting", wait_for_downstream=True)
        plain = EmptyOperator(task_id="plain")
    assert waiting.wait_for_downstream and waiting.depends_on_past
    assert not plain.wait_for_downstream and not plain.depends_on_past


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True])
def test_max_active_tis_per_dagrun_must_be_a_positive_int(value):
    with pytest.raises(DagDefinitionError, match="max_active_tis_per_dagrun must be None or an"):
        EmptyOperator(task_id="t", max_active_tis_per_dagrun=value)


def test_the_new_arguments_come_from_default_args_and_are_serialized():
    args = {"max_active_tis_per_dagrun": 3, "wait_for_downstream": True}
    with DAG("defaults", default_args=args) as dag:
        first = EmptyOperator(task_id="first")
        first >> EmptyOperator(task_id="second", max_active_tis_per_dagrun=1)
    data = {t["task_id"]: t for t in serialize_dag(dag)["tasks"]}
    assert data["first"]["max_active_tis_per_dagrun"] == 3
    assert data["second"]["max_active_tis_per_dagrun"] == 1
    assert data["first"]["wait_for_downstream"] is True
    assert data["first"]["depends_on_past"] is True
    task = SerializedDAG.from_dict(serialize_dag(dag)).get_task("first")
    assert (task.max_active_tis_per_dagrun, task.wait_for_downstream) == (3, True)


def test_a_dag_serialized_before_the_new_fields_reads_as_the_defaults():
    with DAG("old") as dag:
        EmptyOperator(task_id="t")
    data = serialize_dag(dag)
    for task in data["tasks"]:
        del task["max_active_tis_per_dagrun"], task["wait_for_downstream"]
    task = SerializedDAG.from_dict(data).get_task("t")
    assert task.max_active_tis_per_dagrun is None and task.wait_for_downstream is False


# -- max_active_tis_per_dagrun in the queue ----------------------------------------------


def ti(ti_id: int, run_id: str, task_id: str = "t", dag_id: str = "d") -> TiRow:
    return TiRow(
        ti_id, dag_id, run_id, task_id, TaskState.SCHEDULED, 0, 0, None, "default_pool", 1, 1,
        "default", None, None,
    )  # fmt: skip


def occupancy(**run_task_active: int) -> Occupancy:
    """Occupancy with `run__task=count` entries of DAG "d" already queued or running."""
    held = {("d", *key.split("__")): n for key, n in run_task_active.items()}
    task_active: dict = {}
    for (dag_id, _, task_id), count in held.items():
        task_active[(dag_id, task_id)] = task_active.get((dag_id, task_id), 0) + count
    total = sum(held.values())
    return Occupancy(
        {"default_pool": total}, {}, {}, {"d": total}, task_active, total,
        run_task_active=held,
    )  # fmt: skip


def select(candidates, occ, *, per_run=None, per_dag=None, open_slots=32):
    return select_executable(
        candidates,
        occupancy=occ,
        pool_sizes={"default_pool": 128},
        open_slots=open_slots,
        limits_of=lambda _: TaskLimits(16, per_dag, per_run),
    )


def test_per_run_limit_caps_instances_of_one_task_in_one_run():
    # three instances of the same task in run r1 (as mapped instances are), one in r2
    candidates = [ti(1, "r1"), ti(2, "r1"), ti(3, "r1"), ti(4, "r2")]
    selection = select(candidates, occupancy(), per_run=2)
    assert [c.id for c in selection.chosen] == [1, 2, 4]
    assert selection.waiting == {3: WaitReason.TASK_MAX_ACTIVE_TIS_PER_RUN}


def test_per_run_limit_counts_what_is_already_queued_or_running_in_that_run_only():
    candidates = [ti(1, "r1"), ti(2, "r2"), ti(3, "r1", task_id="other")]
    selection = select(candidates, occupancy(r1__t=1), per_run=1)
    assert [c.id for c in selection.chosen] == [2, 3]
    assert selection.waiting == {1: WaitReason.TASK_MAX_ACTIVE_TIS_PER_RUN}
    assert not selection.starving  # not a pool problem


def test_per_dag_limit_still_spans_runs_when_both_are_set():
    candidates = [ti(1, "r1"), ti(2, "r2"), ti(3, "r3")]
    selection = select(candidates, occupancy(), per_run=1, per_dag=2)
    assert [c.id for c in selection.chosen] == [1, 2]
    assert selection.waiting == {3: WaitReason.TASK_MAX_ACTIVE_TIS}


def test_per_run_limit_is_described_with_the_run():
    text = describe(WaitReason.TASK_MAX_ACTIVE_TIS_PER_RUN, ti(1, "manual__1"), 128)
    assert text == "task 't' is at max_active_tis_per_dagrun in run 'manual__1'"


# -- wait_for_downstream ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("past", "downstream", "expected"),
    [
        (S, [S, SK], RUN),
        (S, [], RUN),  # no downstream: like depends_on_past
        (S, [S, R], None),
        (S, [S, N], None),
        (S, [F], None),
        (F, [S], None),
        (None, [F], RUN),  # no previous run at all
    ],
)
def test_evaluate_waits_for_the_previous_runs_downstream(past, downstream, expected):
    decision = evaluate(
        TriggerRule.ALL_SUCCESS,
        [S],
        depends_on_past=True,
        past_state=past,
        past_downstream_states=downstream,
    )
    assert decision == expected


def test_past_downstream_does_not_delay_skips_or_upstream_failed():
    kwargs = {"depends_on_past": True, "past_state": S, "past_downstream_states": [R]}
    assert evaluate(TriggerRule.ALL_SUCCESS, [F], **kwargs) is TaskState.UPSTREAM_FAILED
    assert evaluate(TriggerRule.ALL_SUCCESS, [SK], **kwargs) is TaskState.SKIPPED


def wfd_dag() -> SerializedDAG:
    with DAG("wfd") as dag:
        extract = EmptyOperator(task_id="extract", wait_for_downstream=True)
        load = EmptyOperator(task_id="load")
        report = EmptyOperator(task_id="report")
        audit = EmptyOperator(task_id="audit", depends_on_past=True)
        extract >> [load, report]
        load >> audit  # audit is downstream of load, not of extract: not waited for
    return SerializedDAG.from_dict(serialize_dag(dag))


def test_past_task_ids_are_the_past_dependents_and_the_direct_downstream():
    assert past_task_ids(wfd_dag()) == {"extract", "load", "report", "audit"}
    with DAG("none") as dag:
        EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")
    assert past_task_ids(SerializedDAG.from_dict(serialize_dag(dag))) == set()


@pytest.mark.parametrize(
    ("past", "runs"),
    [
        ({"extract": S, "load": S, "report": SK, "audit": R}, True),  # audit is not direct
        ({"extract": S, "load": S, "report": R, "audit": S}, False),
        ({"extract": S, "load": F, "report": S, "audit": S}, False),
        ({"extract": S, "report": S}, True),  # load had no instance back then
        (None, True),  # first run
    ],
)
def test_decide_holds_a_wait_for_downstream_task_on_the_previous_run(past, runs):
    dag = wfd_dag()
    states = dict.fromkeys(dag.task_ids, N)
    decided = decide(dag, states, past_states=past)
    assert ("extract" in decided) is runs
    if runs:
        assert decided["extract"] is RUN


def test_why_waiting_names_the_previous_runs_unfinished_downstream():
    dag = wfd_dag()
    states = dict.fromkeys(dag.task_ids, N)
    past = {"extract": S, "load": R, "report": S, "audit": N}
    assert why_waiting(dag, "extract", states, past) == (
        "wait_for_downstream: in the previous run, downstream load (running) has not "
        "succeeded or been skipped yet"
    )
    assert why_waiting(dag, "extract", states, {**past, "extract": F}) == (
        "depends_on_past: extract is failed in the previous run (it needs success or skipped)"
    )
    assert why_waiting(dag, "extract", states, {**past, "load": S}) is None
    assert why_waiting(dag, "extract", states, None) is None


# -- weight_rule --------------------------------------------------------------------------


def weights(rule: str) -> dict[str, int]:
    """The queue priorities of a chain a1(10) >> a2(1) >> a3(1) beside x(5) and y(11)."""
    with DAG("weights", default_args={"weight_rule": rule}) as dag:
        a1 = EmptyOperator(task_id="a1", priority_weight=10)
        a2 = EmptyOperator(task_id="a2", priority_weight=1)
        a3 = EmptyOperator(task_id="a3", priority_weight=1)
        EmptyOperator(task_id="x", priority_weight=5)
        EmptyOperator(task_id="y", priority_weight=11)
        a1 >> a2 >> a3
    return {t["task_id"]: t["priority_weight_total"] for t in serialize_dag(dag)["tasks"]}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("downstream", {"a1": 12, "a2": 2, "a3": 1, "x": 5, "y": 11}),
        ("upstream", {"a1": 10, "a2": 11, "a3": 12, "x": 5, "y": 11}),
        ("absolute", {"a1": 10, "a2": 1, "a3": 1, "x": 5, "y": 11}),
    ],
)
def test_weight_rule_sums_the_own_weights_of_all_relatives(rule, expected):
    assert weights(rule) == expected


def test_weight_rule_counts_a_shared_relative_once():
    with DAG("diamond") as dag:
        top = EmptyOperator(task_id="top", priority_weight=1)
        left = EmptyOperator(task_id="left", priority_weight=2)
        right = EmptyOperator(task_id="right", priority_weight=3)
        bottom = EmptyOperator(task_id="bottom", priority_weight=4, weight_rule="upstream")
        top >> [left, right] >> bottom
    assert top.priority_weight_total == 1 + 2 + 3 + 4
    assert bottom.priority_weight_total == 4 + 2 + 3 + 1
    assert dag.get_task("left").priority_weight_total == 2 + 4
