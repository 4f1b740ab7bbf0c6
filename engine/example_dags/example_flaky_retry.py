"""A flaky task that fails on its first attempt and succeeds on the retry."""

from datetime import timedelta

import pendulum

from engine import DAG, PythonOperator, task


def call_flaky_service(ti) -> str:
    if ti.try_number < 2:
        raise ConnectionError(f"service unavailable (attempt {ti.try_number}), will retry")
    return f"answered on attempt {ti.try_number}"


with DAG(
    dag_id="example_flaky_retry",
    schedule=timedelta(hours=6),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "retries"],
) as dag:
    flaky = PythonOperator(
        task_id="call_flaky_service",
        python_callable=call_flaky_service,
        retries=3,
        retry_delay=timedelta(seconds=1),
        retry_exponential_backoff=True,
        max_retry_delay=timedelta(seconds=4),
    )

    @task
    def report(answer: str) -> None:
        print(answer)

    report(flaky.output)
