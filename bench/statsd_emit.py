"""The cost of one StatsD emit: N increments to a UDP socket, through the metrics facade
(`stats.incr`, what the engine calls) and through the StatsD backend alone.

Measures the current `metrics.statsd` against the one of a git revision (the baseline),
alternately in the same window (run 1 of each, run 2 of each...), and prints the median of
each and their ratio, for each layer and tags mode:

    python bench/statsd_emit.py --baseline main --runs 5 --count 100000

A loopback socket receives the datagrams and nobody reads it: a full buffer drops them,
as a StatsD server that falls behind would.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metrics import Stats  # noqa: E402
from metrics import statsd as current  # noqa: E402
from metrics.catalog import CATALOG  # noqa: E402

TAGS = {"dag_id": "etl", "task_id": "load", "state": "success"}


def baseline_module(revision: str) -> ModuleType:
    """`metrics/statsd.py` as it was at `revision`, loaded beside the current one."""
    source = subprocess.run(
        ["git", "show", f"{revision}:metrics/statsd.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "statsd_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("statsd_baseline", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def facade_run(module: ModuleType, port: int, mode: str, count: int) -> float:
    """Seconds for `count` increments of ti.finish (three tags) through the facade."""
    stats = Stats([module.StatsdBackend("127.0.0.1", port, "dagwatch", mode)], strict=True)
    stats.incr("ti.finish", tags=TAGS)  # the first send resolves the host and opens the socket
    started = time.perf_counter()
    for _ in range(count):
        stats.incr("ti.finish", tags=TAGS)
    elapsed = time.perf_counter() - started
    stats.close()
    return elapsed


def backend_run(module: ModuleType, port: int, mode: str, count: int) -> float:
    """Seconds for `count` increments of ti.finish (three tags) given to the backend."""
    backend = module.StatsdBackend("127.0.0.1", port, "dagwatch", mode)
    metric = CATALOG.get("ti.finish")
    backend.count(metric, 1, TAGS)
    started = time.perf_counter()
    for _ in range(count):
        backend.count(metric, 1, TAGS)
    elapsed = time.perf_counter() - started
    backend.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    old = baseline_module(args.baseline)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    print(f"{args.count} increments, median of {args.runs} runs, alternately; per increment")
    print(f"{'layer':8} {'mode':10} {'baseline':>12} {'current':>12} {'ratio':>7}")
    for layer, run in (("facade", facade_run), ("backend", backend_run)):
        for mode in current.TAGS_MODES:
            before, after = [], []
            for _ in range(args.runs):
                before.append(run(old, port, mode, args.count))
                after.append(run(current, port, mode, args.count))
            b, a = statistics.median(before), statistics.median(after)
            per = 1e6 / args.count
            print(f"{layer:8} {mode:10} {b * per:9.2f} µs {a * per:9.2f} µs {a / b:7.2f}")
    sink.close()


if __name__ == "__main__":
    main()
