"""CPU of one attempt run in this process, without the fork around it.

Run by hand: `.venv/bin/python bench/attempt_cpu.py [--attempts 100] [--rounds 5]
[--profile]`. A DAG of no-op `@task`s gets one run whose task instances are all queued;
`runner.run_attempt` then runs them one after another against a SQLite metastore in a
temporary `$DAGWATCH_HOME`. Reports the median and spread over the rounds of CPU
seconds (`time.process_time`) per attempt, after a warm-up round; `--profile` prints
where one more round spends its time (cProfile, cumulative).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from attempt_latency import prepare  # run as a script: bench/ is on sys.path

DAG_FILE = """\
from engine import DAG, task

@task
def noop():
    return None

with DAG("attempt_cpu", schedule=None):
    for i in range({n}):
        noop.override(task_id=f"t{{i}}")()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=100, help="attempts per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dagwatch-bench-") as home:
        os.environ["DAGWATCH_HOME"] = home
        from engine.config import load_config
        from engine.execution import runner
        from engine.store.db import Store
        from engine.store.migrate import migrate

        config = load_config({"DAGWATCH_HOME": home, "DAGWATCH__CORE__LOAD_EXAMPLES": "false"})
        store = Store.from_config(config)
        migrate(store)
        rounds = args.rounds + 1 + args.profile  # a warm-up round first
        path = Path(home, "dag.py")
        path.write_text(DAG_FILE.format(n=args.attempts * rounds))
        dag, requests = prepare(store, path)
        ids = [request.ti_id for request in requests]
        batches = [ids[i : i + args.attempts] for i in range(0, len(ids), args.attempts)]
        for ti_id in batches[0]:
            runner.run_attempt(store, config, dag, ti_id)
        per_attempt = []
        for batch in batches[1 : args.rounds + 1]:
            started = time.process_time()
            for ti_id in batch:
                runner.run_attempt(store, config, dag, ti_id)
            per_attempt.append((time.process_time() - started) / len(batch))
        ms = [v * 1000 for v in per_attempt]
        print(
            f"CPU per attempt, in process ({args.rounds} rounds of {args.attempts}): "
            f"median {statistics.median(ms):.1f} ms, min {min(ms):.1f}, max {max(ms):.1f}"
        )
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            for ti_id in batches[-1]:
                runner.run_attempt(store, config, dag, ti_id)
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
        store.dispose()


if __name__ == "__main__":
    main()
