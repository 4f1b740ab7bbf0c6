"""What an attempt leaves behind in its worker: each kind of change is named, and an
untouched process shows none."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import pytest

from engine.execution.local.reuse_check import (
    MEMORY_GROWTH_LIMIT,
    Marks,
    child_pids,
    resident_bytes,
)


def test_an_untouched_process_shows_no_change():
    marks = Marks.take()
    assert marks.changes(resident_bytes()) is None


def test_a_changed_environment_is_named(monkeypatch):
    marks = Marks.take()
    monkeypatch.setenv("DAGWATCH_TEST_LEFT_BEHIND", "1")
    assert marks.changes(0) == "environment variables changed (DAGWATCH_TEST_LEFT_BEHIND)"


def test_a_changed_working_directory_is_named(monkeypatch, tmp_path):
    marks = Marks.take()
    monkeypatch.chdir(tmp_path)
    assert marks.changes(0) == "the working directory changed"


def test_a_replaced_signal_handler_is_named():
    marks = Marks.take()
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        assert marks.changes(0) == "signal handlers changed (SIGUSR1)"
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_thread_left_running_is_named():
    marks = Marks.take()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="left-behind", daemon=True)
    thread.start()
    try:
        assert marks.changes(0) == "threads still running (left-behind)"
    finally:
        stop.set()
        thread.join()
    assert marks.changes(0) is None


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_a_child_process_left_running_is_named():
    marks = Marks.take()
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in child_pids()
        assert marks.changes(0) == f"child processes still running ({child.pid})"
    finally:
        child.kill()
        child.wait()
    assert marks.changes(0) is None


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_memory_grown_past_the_limit_is_named():
    marks = Marks.take()
    baseline = resident_bytes()
    assert baseline > 0
    ballast = bytearray(MEMORY_GROWTH_LIMIT + 32 * 2**20)  # zero-filled pages: touch them
    for offset in range(0, len(ballast), 4096):
        ballast[offset] = 1
    assert (marks.changes(baseline) or "").startswith("memory grew by ")
    del ballast
