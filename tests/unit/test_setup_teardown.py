"""Setup and teardown tasks against Airflow's semantics: authoring, the
all_done_setup_success rule, indirect setups, the run outcome and clearing's closure."""

from __future__ import annotations

import pytest

from engine import DAG, EmptyOperator, setup, task, teardown
from engine.exceptions import DagDefinitionError
from engine.parsing.serialization import SerializedDAG, serialize_dag
from engine.scheduling import deps
from engine.sdk.setup_teardown import with_setups_and_teardowns
from engine.sdk.trigger_rules import TriggerRule, evaluate
from engine.states import DagRunState, TaskState

S = TaskState.SUCCESS
F = TaskState.FAILED
UF = TaskState.UPSTREAM_FAILED
SK = TaskState.SKIPPED
R = TaskState.RUNNING
N = TaskState.NONE
RUN = TaskState.SCHEDULED
RULE = TriggerRule.ALL_DONE_SETUP_SUCCESS


@pytest.mark.parametrize(
    ("upstream", "setups", "expected"),
    [
        ([S, F], [S], RUN),  # the work failed, the setup succeeded: tear down
        ([S, UF], [S], RUN),
        ([S, R], [S], None),  # waits for every upstream, even the failed work's siblings
        ([F, UF], [F], UF),  # the resource never existed
        ([SK, SK], [SK], SK),  # the setup was skipped: skip
        ([S, F, UF], [S, F], RUN),  # one setup succeeded is enough
        ([SK, F, UF], [SK, F], UF),  # none succeeded, not all skipped
        ([S, F], [], RUN),  # no setup upstream: all_done
        ([SK, SK], [], RUN),
    ],
)
def test_all_done_setup_success_follows_airflow(upstream, setups, expected):
    assert evaluate(RULE, upstream, setup_states=setups) is expected


def _plan(dag: DAG) -> SerializedDAG:
    dag.validate()
    return SerializedDAG.from_dict(serialize_dag(dag))


def _cluster_dag(**teardown_args) -> DAG:
    with DAG("cluster", schedule=None) as dag:
        create = EmptyOperator(task_id="create")
        work = EmptyOperator(task_id="work")
        delete = EmptyOperator(task_id="delete")
        create >> work >> delete.as_teardown(setups=create, **teardown_args)
    return dag


def test_as_teardown_with_setups_wires_and_marks_both_ends():
    dag = _cluster_dag()
    create, delete = dag.get_task("create"), dag.get_task("delete")
    assert create.is_setup and not create.is_teardown
    assert delete.is_teardown and delete.trigger_rule is RULE
    assert delete.upstream_task_ids == {"create", "work"}
    plan = _plan(dag)
    assert (plan.get_task("create").is_setup, plan.get_task("delete").is_teardown) == (True, True)
    assert plan.get_task("delete").on_failure_fail_dagrun is False


def test_decorators_and_the_with_block_wire_work_between_setup_and_teardown():
    @setup
    def make():
        return "cluster"

    @teardown(on_failure_fail_dagrun=True)
    def drop():
        pass

    @task
    def step():
        pass

    with DAG("blocks", schedule=None) as dag:
        made = make()
        with drop().as_teardown(setups=made):
            step.override(task_id="a")() >> step.override(task_id="b")()
    a, b, drop_task = dag.get_task("a"), dag.get_task("b"), dag.get_task("drop")
    assert a.upstream_task_ids == {"make"} and b.upstream_task_ids == {"a"}
    assert drop_task.upstream_task_ids == {"make", "b"}
    assert drop_task.is_teardown and drop_task.on_failure_fail_dagrun
    assert dag.get_task("make").is_setup


def test_a_plain_task_cannot_open_a_setup_block():
    with DAG("plain", schedule=None):
        work = EmptyOperator(task_id="work")
        with pytest.raises(DagDefinitionError, match="only setup and teardown"):
            with work:
                pass


def test_work_after_a_setup_must_be_all_success():
    with DAG("rules", schedule=None) as dag:
        create = EmptyOperator(task_id="create").as_setup()
        create >> EmptyOperator(task_id="work", trigger_rule="all_done")
    with pytest.raises(DagDefinitionError, match=r"'work'.*must be all_success"):
        dag.validate()


def test_a_failing_work_task_still_runs_the_teardown_and_fails_the_run():
    plan = _plan(_cluster_dag())
    states = {"create": S, "work": F, "delete": N}
    assert deps.decide(plan, states) == {"delete": RUN}
    assert deps.run_outcome(plan, {**states, "delete": R}) is None  # waits for the teardown
    assert deps.run_outcome(plan, {**states, "delete": S}) is DagRunState.FAILED


def test_a_failing_setup_fails_the_work_and_the_teardown_does_not_run():
    plan = _plan(_cluster_dag())
    decided = deps.decide(plan, {"create": F, "work": N, "delete": N})
    assert decided == {"work": UF, "delete": UF}
    assert deps.run_outcome(plan, {"create": F, **decided}) is DagRunState.FAILED


def test_a_skipped_setup_skips_its_teardown():
    plan = _plan(_cluster_dag())
    assert deps.decide(plan, {"create": SK, "work": N, "delete": N}) == {
        "work": SK,
        "delete": SK,
    }


@pytest.mark.parametrize(
    ("fail_dagrun", "expected"), [(False, DagRunState.SUCCESS), (True, DagRunState.FAILED)]
)
def test_a_failing_teardown_fails_the_run_only_when_asked(fail_dagrun, expected):
    plan = _plan(_cluster_dag(on_failure_fail_dagrun=fail_dagrun))
    assert deps.run_outcome(plan, {"create": S, "work": S, "delete": F}) is expected


def test_work_waits_for_indirect_setups_whatever_its_own_rule():
    with DAG("indirect", schedule=None) as dag:
        create = EmptyOperator(task_id="create")
        first = EmptyOperator(task_id="first")
        cleanup = EmptyOperator(task_id="cleanup", trigger_rule="all_done")
        delete = EmptyOperator(task_id="delete")
        create >> first >> cleanup >> delete.as_teardown(setups=create)
    plan = _plan(dag)
    assert plan.indirect_setups == {"cleanup": frozenset({"create"})}
    # all_done alone would run `cleanup` after `first` was upstream_failed: Airflow does not
    decided = deps.decide(plan, {"create": F, "first": N, "cleanup": N, "delete": N})
    assert decided == {"first": UF, "cleanup": UF, "delete": UF}


def test_teardown_only_leaves_fall_back_to_the_real_leaves():
    with DAG("only_teardowns", schedule=None) as dag:
        EmptyOperator(task_id="delete").as_teardown()
    assert _plan(dag).outcome_leaves == ["delete"]


def test_clearing_work_adds_its_setups_and_teardowns():
    with DAG("clear", schedule=None) as dag:
        create = EmptyOperator(task_id="create")
        work = EmptyOperator(task_id="work")
        delete = EmptyOperator(task_id="delete")
        other = EmptyOperator(task_id="other")
        create >> work >> delete.as_teardown(setups=create)
        other >> work
    plan = _plan(dag)
    assert with_setups_and_teardowns(plan, {"work"}) == {"work", "create", "delete"}
    assert with_setups_and_teardowns(plan, {"create"}) == {"create", "delete"}
    assert with_setups_and_teardowns(plan, {"other"}) == {"other"}
