"""Branching: pick a path at run time; the join runs with trigger rule none_failed."""

import pendulum

from engine import DAG, EmptyOperator, Label, TriggerRule, task

with DAG(
    dag_id="example_branching",
    schedule="0 6 * * 1-5",
    start_date=pendulum.datetime(2026, 1, 1, tz="Europe/Amsterdam"),
    catchup=False,
    tags=["example", "branching"],
) as dag:

    @task.branch
    def choose_path(**context) -> str:
        is_weekday = context["logical_date"].weekday() < 5
        return "full_load" if is_weekday else "incremental_load"

    full = EmptyOperator(task_id="full_load")
    incremental = EmptyOperator(task_id="incremental_load")
    join = EmptyOperator(task_id="join", trigger_rule=TriggerRule.NONE_FAILED)

    branch = choose_path()
    branch >> Label("weekday") >> full >> join
    branch >> Label("weekend") >> incremental >> join
