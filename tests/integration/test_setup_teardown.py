"""Setup and teardown tasks through the real scheduler loop (local executor, drain mode),
on SQLite and PostgreSQL: teardowns run after failed work, their own failure is ignored
unless on_failure_fail_dagrun, and a failed setup stops its work and its teardown."""

from __future__ import annotations

from engine.store import runs
from tests.integration import test_scheduler_loop as loop_tests
from tests.integration.test_scheduler_loop import drain, entries, run_state, trigger

# the real-loop fixtures of test_scheduler_loop: a config on `store`, a DAG file writer
loop_config = loop_tests.loop_config
ledger = loop_tests.ledger
add_dag = loop_tests.add_dag

CLUSTER = """
def boom(name):
    record(name)
    raise RuntimeError(name + " failed")

with DAG("cluster", schedule=None):
    create = PythonOperator(task_id="create", python_callable={create}, op_args=["create"])
    work = PythonOperator(task_id="work", python_callable={work}, op_args=["work"])
    delete = PythonOperator(task_id="delete", python_callable={delete}, op_args=["delete"])
    create >> work >> delete.as_teardown(setups=create{teardown_args})
"""


def cluster(create="record", work="record", delete="record", teardown_args="") -> str:
    return CLUSTER.format(create=create, work=work, delete=delete, teardown_args=teardown_args)


def states(store, dag_id: str, run_id: str) -> dict[str, str]:
    with store.session() as session:
        return {ti.task_id: ti.state for ti in runs.get_task_instances(session, dag_id, run_id)}


def ran(ledger) -> list[str]:
    return [entry["task"] for entry in entries(ledger)]


def test_teardown_runs_after_failed_work_and_the_run_fails(store, loop_config, add_dag, ledger):
    add_dag("cluster", cluster(work="boom"))
    run_id = trigger(store, "cluster")
    drain(store, loop_config)
    assert ran(ledger) == ["create", "work", "delete"]
    assert states(store, "cluster", run_id) == {
        "create": "success",
        "work": "failed",
        "delete": "success",
    }
    assert run_state(store, "cluster", run_id) == "failed"


def test_a_failing_teardown_leaves_the_run_successful(store, loop_config, add_dag, ledger):
    add_dag("cluster", cluster(delete="boom"))
    run_id = trigger(store, "cluster")
    drain(store, loop_config)
    assert ran(ledger) == ["create", "work", "delete"]
    assert states(store, "cluster", run_id)["delete"] == "failed"
    assert run_state(store, "cluster", run_id) == "success"


def test_on_failure_fail_dagrun_makes_the_teardown_count(store, loop_config, add_dag, ledger):
    add_dag("cluster", cluster(delete="boom", teardown_args=", on_failure_fail_dagrun=True"))
    run_id = trigger(store, "cluster")
    drain(store, loop_config)
    assert ran(ledger) == ["create", "work", "delete"]
    assert states(store, "cluster", run_id)["delete"] == "failed"
    assert run_state(store, "cluster", run_id) == "failed"


def test_a_failing_setup_stops_its_work_and_its_teardown(store, loop_config, add_dag, ledger):
    add_dag("cluster", cluster(create="boom"))
    run_id = trigger(store, "cluster")
    drain(store, loop_config)
    assert ran(ledger) == ["create"]
    assert states(store, "cluster", run_id) == {
        "create": "failed",
        "work": "upstream_failed",
        "delete": "upstream_failed",
    }
    assert run_state(store, "cluster", run_id) == "failed"


def test_decorated_setup_and_teardown_around_a_block(store, loop_config, add_dag, ledger):
    add_dag(
        "decorated",
        """
        @setup
        def make():
            record("make")

        @teardown
        def drop():
            record("drop")

        @task
        def step(name):
            record(name)
            if name == "b":
                raise RuntimeError("b failed")

        with DAG("decorated", schedule=None):
            with drop().as_teardown(setups=make()):
                step.override(task_id="a")("a") >> step.override(task_id="b")("b")
        """,
    )
    run_id = trigger(store, "decorated")
    drain(store, loop_config)
    assert ran(ledger) == ["make", "a", "b", "drop"]
    assert states(store, "decorated", run_id)["drop"] == "success"
    assert run_state(store, "decorated", run_id) == "failed"
