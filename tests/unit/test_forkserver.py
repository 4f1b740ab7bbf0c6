"""dagwatch's fork server: children get their connections, report how they exited, and
never re-run the parent's main script."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from multiprocessing import Pipe

from engine.execution import forkserver


def test_a_child_gets_its_connections_and_runs_its_target():
    reader, writer = Pipe(duplex=False)
    try:
        child = forkserver.start(writer.send, ("hello", 42), name="test-send")
    finally:
        writer.close()
    assert reader.poll(30), "the child sent nothing"
    assert reader.recv() == ("hello", 42)
    child.join(30)
    assert child.exitcode == 0
    assert child.pid != os.getpid()
    child.close()


def test_a_child_exits_with_its_system_exit_code_or_1_on_an_exception():
    exiting = forkserver.start(sys.exit, 3)
    raising = forkserver.start(int, "not a number")
    exiting.join(30)
    raising.join(30)
    assert (exiting.exitcode, raising.exitcode) == (3, 1)


def test_a_killed_child_reports_the_signal_and_its_sentinel_wakes_a_waiter():
    from multiprocessing.connection import wait

    child = forkserver.start(time.sleep, 60)
    assert child.is_alive()
    assert wait([child.sentinel], 0.1) == []
    child.kill()
    assert wait([child.sentinel], 30) == [child.sentinel]
    assert child.exitcode == -signal.SIGKILL
    assert not child.is_alive()
    child.kill()  # reaped already: nothing is signalled


def test_children_do_not_rerun_the_parents_main_script(tmp_path):
    """What multiprocessing's forkserver does for each child (and dagwatch used to patch)."""
    runs = tmp_path / "runs.txt"
    script = tmp_path / "main_script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time
            with open({str(runs)!r}, "a") as out:
                out.write("ran\\n")
            from engine.execution import forkserver

            if __name__ == "__main__":
                children = [forkserver.start(time.sleep, 0) for _ in range(3)]
                for child in children:
                    child.join(30)
                print([child.exitcode for child in children])
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[0, 0, 0]"
    assert runs.read_text().splitlines() == ["ran"]  # by the parent only
