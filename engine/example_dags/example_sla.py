"""A slow task with an SLA and an execution timeout: the classic SLA-miss example."""

import time
from datetime import timedelta

import pendulum

from engine import DAG, EmptyOperator, task

with DAG(
    dag_id="example_sla",
    schedule="*/30 * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "sla"],
    dagrun_timeout=timedelta(minutes=10),
) as dag:

    @task(sla=timedelta(seconds=1), execution_timeout=timedelta(seconds=30))
    def slow_report() -> str:
        time.sleep(2)
        return "report ready"

    slow_report() >> EmptyOperator(task_id="publish")
