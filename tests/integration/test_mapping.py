"""Dynamic task mapping through the real scheduler loop (local executor, drain mode) on
SQLite and PostgreSQL: literal and XCom inputs of 0, 1 and 50 elements, expand_kwargs,
the product of two inputs, a mapped task group, the length cap, clearing and re-expanding.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from engine import DAG, api, task
from engine.exceptions import NotFound
from engine.execution.dag_test import run_dag_in_process
from engine.scheduling.explain import why_not_running
from engine.states import DagRunState
from engine.store import runs, transitions
from engine.store.models import StateTransition, XCom
from tests.helpers import run_cli
from tests.integration import test_scheduler_loop as loop_tests
from tests.integration.test_scheduler_loop import drain, entries, max_overlap, run_state, trigger

loop_config = loop_tests.loop_config
ledger = loop_tests.ledger
add_dag = loop_tests.add_dag

LOGICAL_DATE = datetime(2026, 3, 1, tzinfo=UTC)


def instances(store, dag_id: str, run_id: str, task_id: str) -> dict[int, str]:
    """map_index -> state of one task's instances (placeholder -1 included if left)."""
    with store.session() as session:
        rows = runs.get_task_instances(session, dag_id, run_id)
        return {ti.map_index: ti.state for ti in rows if ti.task_id == task_id}


def xcoms(store, dag_id: str, run_id: str, task_id: str) -> dict[int, object]:
    with store.session() as session:
        rows = session.execute(
            select(XCom.map_index, XCom.value).where(
                XCom.dag_id == dag_id,
                XCom.run_id == run_id,
                XCom.task_id == task_id,
                XCom.key == "return_value",
            )
        )
        return dict(rows.all())


def failure_reasons(store, task_id: str) -> list[str | None]:
    """The reasons recorded when the task's instances moved to failed."""
    with store.session() as session:
        return list(
            session.execute(
                select(StateTransition.reason).where(
                    StateTransition.task_id == task_id, StateTransition.to_state == "failed"
                )
            ).scalars()
        )


MAPPED_OVER_XCOM = """
    @task
    def make(n):
        return list(range(n))

    @task
    def double(x, factor):
        record(f"double-{{x}}")
        return x * factor

    @task(trigger_rule="all_done")
    def total(values):
        record("total")
        with open(LEDGER + ".total", "w") as out:
            out.write(json.dumps(values))

    with DAG("{dag_id}", schedule=None):
        total(double.partial(factor=10).expand(x=make({n})))
"""


def test_mapping_over_an_upstream_list_of_50_runs_50_instances_and_collects_them(
    store, loop_config, add_dag, ledger
):
    add_dag("fifty", MAPPED_OVER_XCOM.format(dag_id="fifty", n=50))
    run_id = trigger(store, "fifty")
    drain(store, loop_config)
    assert run_state(store, "fifty", run_id) == "success"
    assert instances(store, "fifty", run_id, "double") == dict.fromkeys(range(50), "success")
    assert xcoms(store, "fifty", run_id, "double") == {i: i * 10 for i in range(50)}
    assert sorted(e["task"] for e in entries(ledger) if e["task"] != "total") == sorted(
        f"double-{i}" for i in range(50)
    )
    # the unmapped consumer received every value, in map-index order
    assert json.loads(ledger.with_suffix(".jsonl.total").read_text()) == [i * 10 for i in range(50)]


def test_one_element_gives_one_instance_with_map_index_0(store, loop_config, add_dag, ledger):
    add_dag("one", MAPPED_OVER_XCOM.format(dag_id="one", n=1))
    run_id = trigger(store, "one")
    drain(store, loop_config)
    assert run_state(store, "one", run_id) == "success"
    assert instances(store, "one", run_id, "double") == {0: "success"}
    assert json.loads(ledger.with_suffix(".jsonl.total").read_text()) == [0]


def test_zero_elements_skip_the_mapped_task_and_an_all_done_consumer_gets_an_empty_list(
    store, loop_config, add_dag, ledger
):
    add_dag("zero", MAPPED_OVER_XCOM.format(dag_id="zero", n=0))
    run_id = trigger(store, "zero")
    drain(store, loop_config)
    assert run_state(store, "zero", run_id) == "success"
    assert instances(store, "zero", run_id, "double") == {-1: "skipped"}
    assert [e["task"] for e in entries(ledger)] == ["total"]
    assert json.loads(ledger.with_suffix(".jsonl.total").read_text()) == []


def test_zero_elements_skip_an_all_success_consumer_as_airflow_does(store, loop_config, add_dag):
    add_dag(
        "zero_skip",
        """
        @task
        def show(x):
            return x

        @task
        def after(values):
            record("after")

        with DAG("zero_skip", schedule=None):
            after(show.expand(x=[]))
        """,
    )
    run_id = trigger(store, "zero_skip")
    drain(store, loop_config)
    assert run_state(store, "zero_skip", run_id) == "success"
    assert instances(store, "zero_skip", run_id, "show") == {-1: "skipped"}
    assert instances(store, "zero_skip", run_id, "after") == {-1: "skipped"}


def test_literal_product_expand_kwargs_and_classic_operators(store, loop_config, add_dag, ledger):
    add_dag(
        "literal",
        """
        @task
        def pair(letter, number):
            record(f"{letter}{number}")
            return f"{letter}{number}"

        @task
        def kw(a, b=0):
            return a + b

        with DAG("literal", schedule=None):
            pair.expand(letter=["a", "b"], number=[1, 2, 3])
            kw.expand_kwargs([{"a": 1}, {"a": 2, "b": 5}])
            BashOperator.partial(task_id="echo", do_xcom_push=True).expand(
                bash_command=["echo one", "echo two"]
            )
        """,
    )
    run_id = trigger(store, "literal")
    drain(store, loop_config)
    assert run_state(store, "literal", run_id) == "success"
    # the last input varies fastest, as in Airflow (itertools.product order)
    assert xcoms(store, "literal", run_id, "pair") == {
        0: "a1", 1: "a2", 2: "a3", 3: "b1", 4: "b2", 5: "b3"
    }  # fmt: skip
    assert xcoms(store, "literal", run_id, "kw") == {0: 1, 1: 7}
    assert xcoms(store, "literal", run_id, "echo") == {0: "one", 1: "two"}


def test_a_failing_instance_fails_only_itself_and_the_run(store, loop_config, add_dag, ledger):
    add_dag(
        "partly",
        """
        @task
        def check(x):
            record(f"check-{x}")
            if x == 2:
                raise ValueError("two is bad")
            return x

        @task
        def after(values):
            record("after")

        with DAG("partly", schedule=None):
            after(check.expand(x=[1, 2, 3]))
        """,
    )
    run_id = trigger(store, "partly")
    drain(store, loop_config)
    assert run_state(store, "partly", run_id) == "failed"
    assert instances(store, "partly", run_id, "check") == {0: "success", 1: "failed", 2: "success"}
    assert instances(store, "partly", run_id, "after") == {-1: "upstream_failed"}
    assert "after" not in {e["task"] for e in entries(ledger)}


def test_a_mapped_task_group_runs_each_element_through_the_group_independently(
    store, loop_config, add_dag, ledger
):
    add_dag(
        "grouped",
        """
        @task
        def sources():
            return ["a", "b", "c"]

        @task
        def fetch(name):
            record(f"fetch-{name}")
            if name == "b":
                raise ValueError("b is down")
            return name.upper()

        @task
        def save(value, prefix):
            record(f"save-{value}")
            return prefix + value

        @task_group
        def pipeline(name, prefix):
            return save(fetch(name), prefix)

        @task(trigger_rule="all_done")
        def report(values):
            with open(LEDGER + ".report", "w") as out:
                out.write(json.dumps(values))

        with DAG("grouped", schedule=None):
            report(pipeline.partial(prefix="db:").expand(name=sources()))
        """,
    )
    run_id = trigger(store, "grouped")
    drain(store, loop_config)
    # the leaf, report (all_done), succeeded: the run succeeds, as in Airflow
    assert run_state(store, "grouped", run_id) == "success"
    fetch = instances(store, "grouped", run_id, "pipeline.fetch")
    save = instances(store, "grouped", run_id, "pipeline.save")
    assert fetch == {0: "success", 1: "failed", 2: "success"}
    # each save waited for its own fetch only: b's failure did not stop a and c
    assert save == {0: "success", 1: "upstream_failed", 2: "success"}
    assert xcoms(store, "grouped", run_id, "pipeline.save") == {0: "db:A", 2: "db:C"}
    assert json.loads(ledger.with_suffix(".jsonl.report").read_text()) == ["db:A", "db:C"]


def test_max_active_tis_per_dagrun_limits_the_instances_of_a_mapped_task_running_at_once(
    store, loop_config, add_dag, ledger
):
    add_dag(
        "throttled",
        """
        @task(max_active_tis_per_dagrun=2)
        def slow(x):
            record(f"slow-{x}", 0.4)

        with DAG("throttled", schedule=None):
            slow.expand(x=[1, 2, 3, 4, 5])
        """,
    )
    run_id = trigger(store, "throttled")
    drain(store, loop_config, core__parallelism=8)
    assert run_state(store, "throttled", run_id) == "success"
    spans = entries(ledger)
    assert len(spans) == 5
    assert max_overlap(spans) == 2  # the limit held, and was reached


def test_the_map_length_cap_fails_the_mapped_task_with_a_clear_reason(
    store, loop_config, add_dag, ledger
):
    add_dag("capped_map", MAPPED_OVER_XCOM.format(dag_id="capped_map", n=5))
    run_id = trigger(store, "capped_map")
    drain(store, loop_config, core__max_map_length=4)
    assert run_state(store, "capped_map", run_id) == "success"  # total is all_done and leaf
    assert instances(store, "capped_map", run_id, "double") == {-1: "failed"}
    assert failure_reasons(store, "double") == [
        "cannot expand: 5 elements exceed core.max_map_length (4)"
    ]
    assert not any(e["task"].startswith("double") for e in entries(ledger))


def test_mapping_over_a_value_that_is_not_a_list_fails_with_the_reason(store, loop_config, add_dag):
    add_dag(
        "not_list",
        """
        @task
        def make():
            return 42

        @task
        def use(x):
            return x

        with DAG("not_list", schedule=None):
            use.expand(x=make())
        """,
    )
    run_id = trigger(store, "not_list")
    drain(store, loop_config)
    assert run_state(store, "not_list", run_id) == "failed"
    assert instances(store, "not_list", run_id, "use") == {-1: "failed"}
    assert failure_reasons(store, "use") == [
        "cannot expand: upstream task 'make' returned int; only a list or a dict can be mapped over"
    ]


def test_clearing_a_mapped_task_expands_it_again_from_the_new_input(
    store, loop_config, add_dag, home
):
    size = home / "size.txt"
    size.write_text("3")
    add_dag(
        "again",
        f"""
        @task
        def make():
            return list(range(int(open({str(size)!r}).read())))

        @task
        def use(x):
            return x

        with DAG("again", schedule=None):
            use.expand(x=make())
        """,
    )
    run_id = trigger(store, "again")
    drain(store, loop_config)
    assert instances(store, "again", run_id, "use") == {0: "success", 1: "success", 2: "success"}
    size.write_text("2")
    api.clear_task_instances(store, "again", run_id=run_id, actor="test")
    drain(store, loop_config)
    assert run_state(store, "again", run_id) == "success"
    assert instances(store, "again", run_id, "use") == {
        -1: "removed", 0: "success", 1: "success", 2: "removed"
    }  # fmt: skip
    assert xcoms(store, "again", run_id, "use") == {0: 0, 1: 1}


# -- dags test: the same expansion in process; metrics and logs per instance ------------


def test_dags_test_expands_in_process_and_metrics_stay_under_the_task_labels(
    store, config, emitted
):
    with DAG("in_process", schedule=None) as dag:

        @task
        def make():
            return list(range(50))

        @task
        def square(x):
            return x * x

        @task
        def total(values):
            return sum(values)

        total(square.expand(x=make()))

    report = run_dag_in_process(store, config, dag, logical_date=LOGICAL_DATE)
    assert report.state is DagRunState.SUCCESS
    assert instances(store, "in_process", report.run_id, "square") == dict.fromkeys(
        range(50), "success"
    )
    assert xcoms(store, "in_process", report.run_id, "total") == {-1: sum(i * i for i in range(50))}
    starts = [labels for labels, _ in emitted.values("ti.start")]
    assert len(starts) == 52  # make, 50 instances, total
    # 50 instances, one label set: map_index never becomes a label (bounded cardinality)
    assert {
        tuple(sorted(labels.items())) for labels in starts if labels["task_id"] == "square"
    } == {(("dag_id", "in_process"), ("task_id", "square"))}
    # each instance logs to its own file, next to its task's folder
    logs = config["logging.base_log_folder"] / "in_process"
    found = sorted(p.relative_to(logs).parts[1:] for p in logs.rglob("*.log"))
    assert ("square", "map_index=0", "attempt=1.log") in found
    assert ("square", "map_index=49", "attempt=1.log") in found
    assert ("make", "attempt=1.log") in found


def test_states_for_dag_run_json_shows_map_index_for_mapped_instances_only(
    sqlite_store, config, cli_env
):
    store = sqlite_store
    with DAG("cli_mapped", schedule=None) as dag:

        @task
        def before():
            return [1, 2]

        @task
        def each(x):
            return x

        each.expand(x=before())

    report = run_dag_in_process(store, config, dag, logical_date=LOGICAL_DATE)
    result = run_cli(
        "tasks", "states-for-dag-run", "cli_mapped", report.run_id, "--output", "json", env=cli_env
    )
    assert result.returncode == 0, result.stderr
    rows = [
        (r["task_id"], r.get("map_index", "absent"), r["state"]) for r in json.loads(result.stdout)
    ]
    assert rows == [("before", "absent", "success"), ("each", 0, "success"), ("each", 1, "success")]
    table = run_cli("tasks", "states-for-dag-run", "cli_mapped", report.run_id, env=cli_env)
    header = table.stdout.splitlines()[0]
    assert [c.strip() for c in header.split("|")][:5] == [
        "dag_id", "run_id", "task_id", "map_index", "state"
    ]  # fmt: skip


def test_failed_deps_explains_a_mapped_task_before_and_after_expansion(store, loop_config, add_dag):
    add_dag("explained", MAPPED_OVER_XCOM.format(dag_id="explained", n=3))
    run_id = trigger(store, "explained")
    with store.session() as session:  # the run is started by hand: no scheduler yet
        run = runs.get_dag_run(session, "explained", run_id)
        transitions.transition_dag_run(
            session, run.id, expected=run.state, to="running", at=run.queued_at
        )
    assert why_not_running(store, loop_config, "explained", run_id, "double") == (
        "trigger rule all_success is not met yet: waiting for upstream make"
    )
    with pytest.raises(NotFound, match="task 'double' map index 1 not found"):
        why_not_running(store, loop_config, "explained", run_id, "double", map_index=1)
    drain(store, loop_config)
    assert why_not_running(store, loop_config, "explained", run_id, "double", 1) == (
        "finished: success"
    )
