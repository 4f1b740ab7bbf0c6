"""Each attempt records its rendered template fields, with secrets masked."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from engine import DAG, BashOperator, EmptyOperator
from engine.execution.dag_test import run_dag_in_process
from engine.store.models import RenderedFields


def test_rendered_fields_are_recorded_masked(store, config):
    from engine.sdk.variables import Variable

    Variable.set("api_password", "s3cr3t-value-123")
    with DAG("rendering", schedule=None) as dag:
        BashOperator(
            task_id="say",
            bash_command="echo {{ ds }} {{ var.value.api_password }}",
            env={"RUN": "{{ run_id }}"},
        )
        EmptyOperator(task_id="nothing")
    report = run_dag_in_process(store, config, dag, logical_date=datetime(2026, 3, 1, tzinfo=UTC))
    with store.session(readonly=True) as session:
        rows = session.execute(select(RenderedFields)).scalars().all()
    assert [(row.task_id, row.try_number) for row in rows] == [("say", 1)]
    fields = rows[0].fields
    assert fields["bash_command"] == "echo 2026-03-01 ***"
    assert report.run_id in fields["env"]
    assert "s3cr3t-value-123" not in str(fields)
