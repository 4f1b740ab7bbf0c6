"""A scheduler-like process in Prometheus multiprocess mode, run by test_prometheus.py.

It runs in its own interpreter because multiprocess mode is process-wide in
prometheus_client (chosen through PROMETHEUS_MULTIPROC_DIR): the test process stays
in the ordinary mode. It serves /metrics on an ephemeral port, forks a "task attempt"
that emits and exits, prints "<port> <child pid>", then answers "dead" on stdin by
marking the child dead, until stdin closes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from metrics import MetricsSettings, configure
from metrics.prometheus import PrometheusBackend, mark_process_dead

DT_PARENT = {"dag_id": "parent", "task_id": "t"}


def main() -> None:
    directory = Path(sys.argv[1])
    settings = MetricsSettings(
        prometheus_on=True, prometheus_port=0, prometheus_multiproc_dir=directory, strict=True
    )
    stats = configure(settings)
    backend = stats.get_backend(PrometheusBackend)
    assert backend is not None and backend.server is not None
    stats.incr("ti.start", tags=DT_PARENT)
    stats.gauge("executor.running_tasks", 3)
    stats.gauge("pool.open_slots", 4, tags={"pool": "default_pool"})
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            stats.incr("ti.start", tags={"dag_id": "child", "task_id": "t"})
            stats.incr("ti.start", tags=DT_PARENT)
            stats.timing("task.duration", 2.0, tags={"dag_id": "child", "task_id": "t"})
            stats.gauge("executor.running_tasks", 2)
            stats.gauge("pool.open_slots", 1, tags={"pool": "default_pool"})  # the latest
            stats.incr("custom.rows_loaded", 5, tags={"team": "data"})
            stats.flush()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    print(backend.server.port, pid, flush=True)
    for line in sys.stdin:
        if line.strip() == "dead":
            mark_process_dead(pid, directory)
            print("ok", flush=True)
    stats.close()


if __name__ == "__main__":
    main()
