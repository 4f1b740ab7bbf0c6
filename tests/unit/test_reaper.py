"""A subreaper ends every process below it: children, their children, and daemons whose
parent is gone, however they detached; and never a process it was told to spare."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from engine.execution.reaper import Ended

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/task"), reason="needs Linux /proc and prctl"
)

#: Run in a fresh interpreter: making the test process a subreaper would have it adopt
#: the orphans of everything else the tests start.
SCENARIO = """
import json, os, subprocess, sys, time
from engine.execution import reaper

subreaper = sys.argv[1] == "subreaper"
if subreaper:
    assert reaper.become_subreaper()
daemon_pid = os.pipe()
pid = os.fork()
if pid == 0:  # double fork: the daemon's parent exits at once
    if os.fork():
        os._exit(0)
    os.setsid()
    os.write(daemon_pid[1], str(os.getpid()).encode())
    time.sleep(60)
    os._exit(0)
os.waitpid(pid, 0)
daemon = int(os.read(daemon_pid[0], 32))
sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
parent = subprocess.Popen(["bash", "-c", "sleep 61 & wait"])
spared = subprocess.Popen(["sleep", "62"])
time.sleep(0.2)  # let bash start its child
grandchild = [int(p) for p in open(f"/proc/{parent.pid}/task/{parent.pid}/children").read().split()]
ended = reaper.end_children(spare={spared.pid})
out = open(sys.argv[2], "w")
out.write(json.dumps({
    "daemon": daemon, "sleeper": sleeper.pid, "parent": parent.pid,
    "grandchild": grandchild, "spared": spared.pid,
    "killed": ended.killed, "alive": list(ended.alive), "spared_alive": spared.poll() is None,
}))
out.close()
spared.kill()
spared.wait()
"""


def run_scenario(tmp_path: Path, mode: str) -> dict:
    script = tmp_path / "scenario.py"
    script.write_text(textwrap.dedent(SCENARIO))
    seen, errors = tmp_path / "seen.json", tmp_path / "errors.txt"
    with errors.open("w") as stderr:  # no pipe: an escaped process would hold it open
        done = subprocess.run(
            [sys.executable, str(script), mode, str(seen)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, errors.read_text()
    return json.loads(seen.read_text())


def gone(pid: int, wait: float = 5.0) -> bool:
    """Whether `pid` is gone (or a zombie), waiting up to `wait` s for that."""
    deadline = time.monotonic() + wait
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat[stat.rfind(")") + 2] == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def test_a_subreaper_ends_children_grandchildren_and_detached_daemons(tmp_path):
    seen = run_scenario(tmp_path, "subreaper")
    assert len(seen["grandchild"]) == 1
    # the daemon, the sleeper in its own session, bash, then bash's child it adopted
    assert (seen["killed"], seen["alive"], seen["spared_alive"]) == (4, [], True)
    for pid in (seen["daemon"], seen["sleeper"], seen["parent"], *seen["grandchild"]):
        assert gone(pid), pid


def test_without_the_subreaper_flag_a_daemon_escapes(tmp_path):
    """Why the flag: a daemon whose parent exited is no one's child here to be ended."""
    seen = run_scenario(tmp_path, "plain")
    escaped = [seen["daemon"], *seen["grandchild"]]
    try:
        assert seen["killed"] == 2  # the sleeper and bash; bash's child went elsewhere too
        assert not any(gone(pid, wait=0.0) for pid in escaped)
    finally:
        for pid in escaped:
            os.kill(pid, signal.SIGKILL)


def test_what_was_ended_is_described():
    assert Ended().describe() is None
    assert Ended(3).describe() == "killed 3 process(es) it left running"
    assert Ended(2, (41, 42)).describe() == (
        "2 process(es) it left did not die of SIGKILL (41, 42)"
    )
