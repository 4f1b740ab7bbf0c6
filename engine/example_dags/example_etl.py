"""An extract-transform-load chain of templated bash commands, one run a day."""

from datetime import timedelta

import pendulum

from engine import DAG, BashOperator, Param

#: One file per day and region, named from the run's logical date.
DATA_FILE = "/tmp/dagwatch_example_etl/{{ ds_nodash }}_{{ params.region }}.csv"

with DAG(
    dag_id="example_etl",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "etl"],
    owner="data-eng",
    description="Extract, transform and load a day of orders with templated bash.",
    params={"region": Param("eu", type="string", enum=["eu", "us", "apac"])},
    default_args={"retries": 1, "retry_delay": timedelta(seconds=5)},
) as dag:
    extract = BashOperator(
        task_id="extract",
        bash_command=(
            f"mkdir -p $(dirname {DATA_FILE}) && echo 'order_id,amount' > {DATA_FILE} && "
            f'for i in 1 2 3; do echo "$i,$((i * 10))" >> {DATA_FILE}; done && '
            "echo extracted {{ ds }} for {{ params.region }}"
        ),
    )
    transform = BashOperator(
        task_id="transform",
        bash_command=f"tail -n +2 {DATA_FILE} | awk -F, '{{ total += $2 }} END {{ print total }}'",
    )
    load = BashOperator(
        task_id="load",
        bash_command=(
            "echo \"loading total {{ ti.xcom_pull(task_ids='transform') }} "
            'for {{ ds }} (run {{ run_id }})"'
        ),
    )
    extract >> transform >> load
