"""How long a `dagwatch` command takes, whole process, from start to exit.

Run by hand: `.venv/bin/python bench/cli_startup.py [--runs 10] [--source DIR] [--baseline DIR]`.
It makes a fresh DAGWATCH_HOME (SQLite, migrated, one DAG reserialized), then times each
command `--runs` times as a user runs it (`python -m engine ARGS`, a new process each
time) and prints the median wall-clock time, its spread, and the median CPU time (user +
system, steadier than wall-clock on a busy machine) in milliseconds:
- `python -c pass`: the interpreter alone, the floor;
- `dagwatch version`, `dagwatch --help`;
- `dagwatch dags trigger bench` (a run written to the metastore);
- the other everyday verbs: `dags list`, `dags pause bench`, `tasks states-for-dag-run`;
- references for what a verb costs: SQLAlchemy Core with its SQLite dialect alone, the
  ORM models (SQLAlchemy's ORM and the metastore's mapped classes), `importlib.metadata`
  alone and the plugins' entry points read with it (what `--help` and every verb that
  installs the plugins pay to find them).
`--source DIR` times the `engine`, `alerts` and `console` packages found in DIR instead of
the installed ones (an earlier checkout), with the same interpreter; `--baseline DIR` times
both, one run of each in turn, so that the load of a busy machine weighs on both alike.
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
    ("dagwatch dags list", ["-m", "engine", "dags", "list"]),
    ("dagwatch dags pause bench", ["-m", "engine", "dags", "pause", "bench"]),
    (
        "dagwatch tasks states-for-dag-run",
        ["-m", "engine", "tasks", "states-for-dag-run", "bench", "bench_run"],
    ),
    ("import sqlalchemy (Core, SQLite)", ["-c", "import sqlalchemy.dialects.sqlite"]),
    ("import engine.store.models (ORM)", ["-c", "import engine.store.models"]),
    ("import importlib.metadata", ["-c", "import importlib.metadata"]),
    (
        "entry points (importlib.metadata)",
        [
            "-c",
            "from importlib.metadata import entry_points; entry_points(group='dagwatch.plugins')",
        ],
    ),
)
SETUP: tuple[list[str], ...] = (
    ["db", "migrate"],
    ["dags", "reserialize"],
    ["dags", "unpause", "bench"],
    ["dags", "trigger", "bench", "--run-id", "bench_run"],
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


def _home(scratch: Path, source: Path | None) -> dict[str, str]:
    """A fresh migrated home with the bench DAG; its environment (`source` first on the path)."""
    home = Path(tempfile.mkdtemp(dir=scratch))
    (home / "dags").mkdir()
    (home / "dags" / "bench.py").write_text(DAG_FILE)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "DAGWATCH_HOME": str(home),
        "DAGWATCH__CORE__DAGS_FOLDER": str(home / "dags"),
        "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
    }
    if source is not None:
        env["PYTHONPATH"] = str(source.resolve())
    for setup in SETUP:
        subprocess.run([sys.executable, "-m", "engine", *setup], env=env, cwd=home, check=True)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--source", type=Path, help="time the packages in this directory")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also time the packages in this directory, run for run in turn with the others",
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dagwatch-cli-bench-") as scratch:
        variants = [("", _home(Path(scratch), options.source))]
        if options.baseline is not None:
            variants = [("before", _home(Path(scratch), options.baseline)), ("now", variants[0][1])]
        print(
            f"{'command':<46} {'wall ms':>8} {'min':>6} {'max':>6} {'cpu ms':>7}"
            f"  (medians of {options.runs} runs)"
        )
        for label, args in COMMANDS:
            for _name, env in variants:
                _run(args, env)  # warm the file cache
            timings: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in variants}
            for _ in range(options.runs):  # in turn: a burst of load hits both alike
                for name, env in variants:
                    timings[name].append(_run(args, env))
            for name, _env in variants:
                walls, cpus = zip(*timings[name], strict=True)
                shown = f"{label} ({name})" if name else label
                print(
                    f"{shown:<46} {statistics.median(walls):>8.0f} {min(walls):>6.0f}"
                    f" {max(walls):>6.0f} {statistics.median(cpus):>7.0f}"
                )


if __name__ == "__main__":
    main()
