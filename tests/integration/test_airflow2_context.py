"""The Airflow 2 context variables in a real run (SQLite and PostgreSQL): in Jinja
templates, in `context[...]` and as Python-callable arguments, with the warning."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine import DAG, BashOperator, PythonOperator, get_current_context
from engine.execution.dag_test import run_dag_in_process
from engine.sdk.compat import DagwatchDeprecationWarning, _warned
from engine.states import DagRunState
from engine.store import runs

START = datetime(2024, 1, 1, tzinfo=UTC)


def _from_arguments(execution_date, next_ds, prev_ds_nodash, prev_execution_date_success):
    success = prev_execution_date_success
    return [execution_date.isoformat(), next_ds, prev_ds_nodash, success and success.isoformat()]


def _from_context(**context):
    return [context["tomorrow_ds"], context.get("yesterday_ds_nodash"), context["prev_ds"]]


def _build() -> DAG:
    with DAG("airflow2_vars", schedule="@daily", start_date=START) as dag:
        BashOperator(
            task_id="templated",
            bash_command="echo '{{ execution_date }}|{{ next_ds }}|{{ next_execution_date }}'",
        )
        PythonOperator(task_id="arguments", python_callable=_from_arguments)
        PythonOperator(task_id="context", python_callable=_from_context)
        PythonOperator(
            task_id="plain",  # a task using none of them: the same values as ever
            python_callable=lambda ds, logical_date: [ds, logical_date.isoformat()],
        )
    return dag


def _xcoms(store, run_id: str) -> dict:
    with store.session() as session:
        return runs.get_xcoms(
            session,
            dag_id="airflow2_vars",
            run_id=run_id,
            task_ids=["templated", "arguments", "context", "plain"],
            key="return_value",
        )


def test_airflow_2_variables_everywhere_a_task_reads_its_context(store, config):
    _warned.clear()
    dag = _build()
    with pytest.warns(DagwatchDeprecationWarning) as record:
        first = run_dag_in_process(
            store, config, dag, logical_date=datetime(2024, 3, 4, tzinfo=UTC)
        )
        second = run_dag_in_process(
            store, config, dag, logical_date=datetime(2024, 3, 5, tzinfo=UTC)
        )
    assert first.state is DagRunState.SUCCESS and second.state is DagRunState.SUCCESS
    values = _xcoms(store, second.run_id)
    # datetimes print as pendulum 2 (Airflow 2) printed them, with a "T"
    assert values["templated"] == "2024-03-05T00:00:00+00:00|2024-03-06|2024-03-06T00:00:00+00:00"
    assert values["arguments"] == [
        "2024-03-05T00:00:00+00:00",
        "2024-03-06",
        "20240304",
        "2024-03-04T00:00:00+00:00",  # the first run, which succeeded
    ]
    assert values["context"] == ["2024-03-06", "20240304", "2024-03-04"]
    assert values["plain"] == ["2024-03-05", "2024-03-05T00:00:00+00:00"]
    assert _xcoms(store, first.run_id)["arguments"][3] is None  # no earlier success
    # templates and callable arguments warn as they are read (a `**context` dict is a
    # plain dict: a DAG file's own mentions are found when the file is imported)
    warned = {str(w.message).split(" ")[0] for w in record}
    assert {"execution_date", "next_ds", "next_execution_date", "prev_ds_nodash"} <= warned


def _from_current_context():
    context = get_current_context()
    return [
        str(context["prev_execution_date_success"]),
        str(context.get("prev_execution_date_success")),
    ]


def _fail_on_the_2nd(ds):
    if ds == "2024-03-02":
        raise ValueError("the second run fails")


def test_prev_execution_date_success_skips_failed_runs(store, config):
    _warned.clear()
    with DAG("flaky", schedule="@daily", start_date=START) as dag:
        PythonOperator(
            task_id="read",
            python_callable=lambda prev_execution_date_success: str(prev_execution_date_success),
        )
        PythonOperator(task_id="fails_on_the_2nd", python_callable=_fail_on_the_2nd)
        # read only when asked: by a template, or through the context
        BashOperator(task_id="templated", bash_command="echo {{ prev_execution_date_success }}")
        PythonOperator(task_id="current", python_callable=_from_current_context)
    with pytest.warns(DagwatchDeprecationWarning):
        run_dag_in_process(store, config, dag, logical_date=datetime(2024, 3, 1, tzinfo=UTC))
        failed = run_dag_in_process(
            store, config, dag, logical_date=datetime(2024, 3, 2, tzinfo=UTC)
        )
        assert failed.state is DagRunState.FAILED
        third = run_dag_in_process(
            store, config, dag, logical_date=datetime(2024, 3, 3, tzinfo=UTC)
        )
    with store.session() as session:
        value = runs.get_xcoms(
            session,
            dag_id="flaky",
            run_id=third.run_id,
            task_ids=["read", "templated", "current"],
            key="return_value",
        )
    when = "2024-03-01T00:00:00+00:00"
    assert value == {"read": when, "templated": when, "current": [when, when]}
