"""Fan-out / fan-in with TaskFlow: values travel between tasks through XCom."""

import pendulum

from engine import dag, task


@dag(
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "taskflow"],
)
def example_fan_out_in():
    @task
    def list_regions() -> list[str]:
        return ["eu", "us", "apac"]

    @task
    def count_orders(region: str, regions: list[str]) -> int:
        return 10 * (regions.index(region) + 1)

    @task
    def total(counts: list[int]) -> int:
        print(f"total orders: {sum(counts)}")
        return sum(counts)

    regions = list_regions()
    counts = [
        count_orders.override(task_id=f"count_{region}")(region, regions)
        for region in ("eu", "us", "apac")
    ]
    total(counts)


example_fan_out_in()
