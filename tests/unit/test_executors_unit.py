"""Executor pieces that need no process and no metastore."""

from __future__ import annotations

import os
import pickle
import time

import pytest

from engine.exceptions import ConfigError
from engine.execution import get_executor
from engine.execution.attempt import (
    UnrunnableAttempt,
    config_from_payload,
    config_payload,
    load_dag,
)
from engine.execution.celery import CeleryExecutor
from engine.execution.local import LocalExecutor
from engine.execution.reaper import describe_exit


def test_get_executor_names_the_allowed_values(config):
    with pytest.raises(ConfigError, match=r"'dask'.*allowed values: sequential, local, celery"):
        get_executor("dask", config, None)
    local = get_executor("local", config, None)
    assert isinstance(local, LocalExecutor)
    assert local.parallelism == config["core.parallelism"] == local.open_slots
    celery = get_executor("celery", config, None)
    assert isinstance(celery, CeleryExecutor)
    assert celery.parallelism == config["core.parallelism"] == celery.open_slots


def test_the_config_crosses_a_process_boundary_unchanged(config):
    changed = config.with_overrides(core__parallelism=3, scheduler__heartbeat_timeout=6)
    payload = config_payload(changed)
    rebuilt = config_from_payload(pickle.loads(pickle.dumps(payload)))
    assert rebuilt.home == changed.home
    assert {k: (s.value, s.source) for k, s in rebuilt.settings.items()} == {
        k: (s.value, s.source) for k, s in changed.settings.items()
    }


def test_exit_codes_name_their_signal():
    assert describe_exit(-9) == "code -9 (signal SIGKILL)"
    assert describe_exit(3) == "code 3"
    assert describe_exit(None) == "code None"


def test_load_dag_imports_each_version_of_a_file_once(tmp_path):
    counter = tmp_path / "imports.txt"
    path = tmp_path / "cached.py"
    source = (
        "from pathlib import Path\n"
        "from engine import DAG, EmptyOperator\n"
        f"counter = Path({str(counter)!r})\n"
        "counter.write_text((counter.read_text() if counter.exists() else '') + 'x')\n"
        "with DAG('cached', schedule=None):\n"
        "    EmptyOperator(task_id='{task}')\n"
    )
    path.write_text(source.format(task="a"))
    cache: dict = {}
    assert load_dag(str(path), "cached", "a", cache).has_task("a")
    assert load_dag(str(path), "cached", "a", cache).has_task("a")
    assert counter.read_text() == "x"
    path.write_text(source.format(task="b"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(UnrunnableAttempt, match="task 'a' is not in DAG 'cached'"):
        load_dag(str(path), "cached", "a", cache)
    assert counter.read_text() == "xx" and len(cache) == 1
    with pytest.raises(UnrunnableAttempt, match=r"DAG 'other' is not defined in .*defined: cached"):
        load_dag(str(path), "other", None, cache)


def test_an_idle_local_executor_waits_without_spinning(config):
    executor = LocalExecutor(config, parallelism=2)
    started = time.monotonic()
    assert executor.wait(0.1) is False
    assert time.monotonic() - started >= 0.09
    assert executor.collect() == [] and executor.running_ti_ids() == set()


def test_idle_workers_are_kept_for_the_configured_time(config):
    assert LocalExecutor(config, parallelism=2).worker_idle_timeout == 60.0
    tuned = config.with_overrides(core__worker_idle_timeout=5)
    assert LocalExecutor(tuned, parallelism=2).worker_idle_timeout == 5.0


def test_running_ti_ids_can_be_read_from_another_thread(config):
    """/health reads it from the HTTP server's thread while the loop queues attempts."""
    import threading

    from engine.execution.base import AttemptRequest

    executor = LocalExecutor(config, parallelism=2)
    requests = [AttemptRequest(i, "d", "r", f"t{i}", "f.py") for i in range(2000)]
    executor._held.extend(requests)
    done = threading.Event()

    def churn() -> None:  # what queueing and starting attempts do to the held queue
        while not done.is_set():
            executor._held.rotate(1)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert len(executor.running_ti_ids()) == 2000
    finally:
        done.set()
        thread.join()
