"""A group of exports sharing a small pool: at most two run at once.

Create the pool first: `dagwatch pools set example_pool 2 "Example exports"`.
"""

import time

import pendulum

from engine import DAG, EmptyOperator, TaskGroup, task

with DAG(
    dag_id="example_pool_limited",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "pools"],
    max_active_tasks=4,
) as dag:
    start = EmptyOperator(task_id="start")
    done = EmptyOperator(task_id="done")

    with TaskGroup("exports", tooltip="Exports limited by example_pool") as exports:
        for table in ("orders", "customers", "invoices", "payments"):

            @task(task_id=f"export_{table}", pool="example_pool", priority_weight=2)
            def export(name: str = table) -> str:
                time.sleep(0.2)
                return f"exported {name}"

            export()

    start >> exports >> done
