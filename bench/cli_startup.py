"""How long a `dagwatch` command takes, whole process, from start to exit.

Run by hand: `.venv/bin/python bench/cli_startup.py [--runs 10] [--source DIR]`.
It makes a fresh DAGWATCH_HOME (SQLite, migrated, one DAG reserialized), then times each
command `--runs` times as a user runs it (`python -m engine ARGS`, a new process each
time) and prints the median wall-clock time, its spread, and the median CPU time (user +
system, steadier than wall-clock on a busy machine) in milliseconds:
- `python -c pass`: the interpreter alone, the floor;
- `dagwatch version`, `dagwatch --help`;
- `dagwatch dags trigger bench` (a run written to the metastore).
`--source DIR` times the `engine`, `alerts` and `console` packages found in DIR instead of
the installed ones (a baseline: an earlier checkout), with the same interpreter.
`python -X importtime -m engine version` shows where the remaining time goes.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAG_FILE = """\
from engine import DAG
from engine.sdk.operators import EmptyOperator

with DAG("bench", schedule=None):
    EmptyOperator(task_id="a")
"""

COMMANDS: tuple[tuple[str, list[str]], ...] = (
    ("python -c pass", ["-c", "pass"]),
    ("dagwatch version", ["-m", "engine", "version"]),
    ("dagwatch --help", ["-m", "engine", "--help"]),
    ("dagwatch dags trigger bench", ["-m", "engine", "dags", "trigger", "bench"]),
)


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) milliseconds of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=env["DAGWATCH_HOME"],  # not this checkout: `-m` puts the cwd first on sys.path
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall * 1000, cpu * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--source", type=Path, help="time the packages in this directory")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dagwatch-cli-bench-") as scratch:
        home = Path(scratch)
        (home / "dags").mkdir()
        (home / "dags" / "bench.py").write_text(DAG_FILE)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "DAGWATCH_HOME": str(home),
            "DAGWATCH__CORE__DAGS_FOLDER": str(home / "dags"),
            "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        }
        if options.source is not None:
            env["PYTHONPATH"] = str(options.source.resolve())
        for setup in (["db", "migrate"], ["dags", "reserialize"], ["dags", "unpause", "bench"]):
            subprocess.run([sys.executable, "-m", "engine", *setup], env=env, cwd=home, check=True)
        print(
            f"{'command':<30} {'wall ms':>8} {'min':>6} {'max':>6} {'cpu ms':>7}"
            f"  (medians of {options.runs} runs)"
        )
        for label, args in COMMANDS:
            _run(args, env)  # warm the file cache
            walls, cpus = zip(*(_run(args, env) for _ in range(options.runs)), strict=True)
            print(
                f"{label:<30} {statistics.median(walls):>8.0f} {min(walls):>6.0f}"
                f" {max(walls):>6.0f} {statistics.median(cpus):>7.0f}"
            )


if __name__ == "__main__":
    main()
