"""Dynamic task mapping: one instance per file found at run time, and a mapped task group
that checks then loads each region on its own."""

import pendulum

from engine import dag, task, task_group


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "mapping"],
)
def example_mapping():
    @task
    def list_files() -> list[str]:
        return [f"orders_{hour:02d}.csv" for hour in range(6)]

    @task(retries=1)
    def load(path: str, table: str) -> int:
        print(f"loading {path} into {table}")
        return len(path)

    @task
    def summarize(rows: list[int]) -> int:
        print(f"{len(rows)} files, {sum(rows)} rows")
        return sum(rows)

    @task
    def fetch(region: str) -> dict:
        return {"region": region, "orders": 3}

    @task
    def check(batch: dict) -> str:
        if batch["orders"] < 1:
            raise ValueError(f"no orders for {batch['region']}")
        return batch["region"]

    @task_group
    def per_region(region: str):
        return check(fetch(region))

    summarize(load.partial(table="raw.orders").expand(path=list_files()))
    per_region.expand(region=["eu", "us", "apac"])


example_mapping()
