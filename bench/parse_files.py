"""W3: parse 100 DAG files of 10 tasks each, cold and then unchanged.

Run by hand: `.venv/bin/python bench/parse_files.py [--files 100] [--tasks 10] [--runs 5]`.
Reports the median and spread over the runs of: the cold pass (every file imported),
the warm pass (no file changed: hashes compared, nothing imported) and the CPU seconds
of this process during the warm pass.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from engine.config import load_config
from engine.parsing.parser import process_folders
from engine.store.db import Store
from engine.store.migrate import migrate

TEMPLATE = """\
import pendulum
from engine import DAG, EmptyOperator, chain

with DAG(
    dag_id="bench_{n:04d}",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
) as dag:
    chain(*[EmptyOperator(task_id=f"t{{i}}") for i in range({tasks})])
"""


def one_run(files: int, tasks: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix="dagwatch-bench-") as home:
        dags = Path(home, "dags")
        dags.mkdir()
        for n in range(files):
            (dags / f"bench_{n:04d}.py").write_text(TEMPLATE.format(n=n, tasks=tasks))
        config = load_config({"DAGWATCH_HOME": home, "DAGWATCH__CORE__LOAD_EXAMPLES": "false"})
        store = Store.from_config(config)
        migrate(store)
        started = time.perf_counter()
        report = process_folders(store, config)
        cold = time.perf_counter() - started
        assert report.dags_found == files and report.import_errors == 0, report
        cpu_before = time.process_time()
        started = time.perf_counter()
        report = process_folders(store, config)
        warm = time.perf_counter() - started
        warm_cpu = time.process_time() - cpu_before
        assert report.files_parsed == 0, "unchanged files were imported again"
        store.dispose()
    return cold, warm, warm_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = [one_run(args.files, args.tasks) for _ in range(args.runs)]
    labels = ("cold parse", "unchanged pass", "unchanged CPU")
    for label, values in zip(labels, zip(*results, strict=True), strict=True):
        print(
            f"{label:<16} median {statistics.median(values):.3f} s  "
            f"min {min(values):.3f}  max {max(values):.3f}  ({args.runs} runs)"
        )


if __name__ == "__main__":
    main()
