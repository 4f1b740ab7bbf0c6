"""A sensor waits for a file that an upstream task writes, then the file is processed."""

import os
from datetime import timedelta

import pendulum

from engine import DAG, BashOperator, PythonSensor

MARKER = "/tmp/dagwatch_example_sensor/{{ ds_nodash }}.ready"


def marker_exists(path: str) -> bool:
    return os.path.exists(path)


with DAG(
    dag_id="example_sensor",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "sensor"],
) as dag:
    produce = BashOperator(
        task_id="produce",
        bash_command=f"mkdir -p $(dirname {MARKER}) && touch {MARKER}",
    )
    wait = PythonSensor(
        task_id="wait_for_marker",
        python_callable=marker_exists,
        op_args=[MARKER],
        poke_interval=1,
        timeout=timedelta(minutes=2),
    )
    consume = BashOperator(task_id="consume", bash_command=f"rm {MARKER} && echo consumed")
    produce >> wait >> consume
