"""Nothing an attempt started outlives it: child subreapers, and ending a process's children.

A task's processes can leave the attempt's process group and session (`setsid`,
`start_new_session=True`, a daemon's double fork), so signalling the group misses them;
and once their parent exits they are re-parented, so a walk of /proc down from the
attempt's pid misses them too. Linux's child subreaper flag (PR_SET_CHILD_SUBREAPER)
closes both gaps without cgroups (which need privileges or a delegated hierarchy): an
orphan is re-parented to its nearest living ancestor that set the flag instead of to
init. The worker template, every worker and every attempt process set it, so whatever a
task started stays a descendant of the process supervising the attempt, however it
detached, and when that process dies its orphans go to the next one up.

Ending them then needs no walk and no guess: `end_children` SIGKILLs the process's own
children, reaps them (which hands it their children), and repeats until none is left.
It only ever signals its own unreaped children, and a child keeps its pid until reaped,
so no signal can reach an unrelated process that took over a recycled pid.

What this cannot hold: a process a task hands to another manager (systemd-run, a
container runtime, at), and one that makes itself a subreaper and then exits with
orphans of its own still running.

From outside, the executor stops an attempt by signalling process groups (`kill_group`):
SIGTERM to the group that runs it, and SIGKILL to that group and its descendants' groups
once it has outstayed its grace, or when the process supervising it is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: prctl(2) option: adopt the orphans of every descendant
PR_SET_CHILD_SUBREAPER = 36
#: seconds `end_children` waits for killed processes to go (one stuck in the kernel, say
#: on a dead NFS mount, cannot die before it returns from there)
END_TIMEOUT = 5.0
#: seconds between looks for a killed child's exit
_POLL = 0.002


@functools.cache
def _prctl() -> object | None:
    """libc's prctl, looked up once (the template's lookup is inherited by its forks)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


def become_subreaper() -> bool:
    """Adopt the orphans of this process's descendants; False where Linux does not allow
    it (the flag is not inherited: each process that supervises attempts sets its own)."""
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0  # type: ignore[operator]


def child_pids() -> list[int]:
    """This process's children (any thread's, zombies included), from /proc."""
    children: list[int] = []
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:
        return children
    for tid in threads:  # raw reads: every attempt ends with one look, usually at nothing
        try:
            fd = os.open(f"/proc/self/task/{tid}/children", os.O_RDONLY)
        except OSError:  # the thread ended meanwhile
            continue
        try:
            data = b""
            while chunk := os.read(fd, 1 << 16):
                data += chunk
            children += map(int, data.split())
        except (OSError, ValueError):
            pass
        finally:
            os.close(fd)
    return children


@dataclass(frozen=True)
class Ended:
    """What `end_children` did: how many processes it killed, and any still there."""

    killed: int = 0
    alive: tuple[int, ...] = ()

    def describe(self) -> str | None:
        """In words, for logs and errors; None when there was nothing to end."""
        if self.alive:
            pids = ", ".join(map(str, self.alive[:5]))
            return f"{len(self.alive)} process(es) it left did not die of SIGKILL ({pids})"
        if self.killed:
            return f"killed {self.killed} process(es) it left running"
        return None


def end_children(spare: Collection[int] = (), timeout: float = END_TIMEOUT) -> Ended:
    """SIGKILL and reap this process's children except `spare`, then the children they
    leave to it (as a subreaper), until none is left or `timeout` passes."""
    deadline = time.monotonic() + timeout
    killed: set[int] = set()
    while True:
        children = [pid for pid in child_pids() if pid not in spare]
        if not children:
            return Ended(len(killed))
        for pid in children:
            if pid not in killed and not _exited(pid):
                # an unreaped child: its pid cannot belong to anyone else
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        left = _reap(children, deadline)
        if left:
            log.error("processes %s did not exit %g s after SIGKILL", left, timeout)
            return Ended(len(killed), tuple(left))


def end_attempt_processes() -> Ended:
    """Kill and reap what an attempt left running (all this process's children: a process
    that supervises an attempt starts none of its own), saying so in the attempt's log."""
    ended = end_children()
    if ended.killed or ended.alive:
        log.warning("the attempt's processes were ended: %s", ended.describe())
    return ended


def _exited(pid: int) -> bool:
    """Whether this child already exited (a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def _reap(pids: list[int], deadline: float) -> list[int]:
    """Wait for these children to exit (reaping them) until `deadline`; those left."""
    left = list(pids)
    while left:
        for pid in list(left):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped by its own Popen meanwhile
                done = pid
            if done:
                left.remove(pid)
        if left:
            if time.monotonic() >= deadline:
                break
            time.sleep(_POLL)
    return left


def _children_map() -> dict[int, list[tuple[int, int]]]:
    """ppid -> [(pid, pgid)] for every process visible in /proc (empty elsewhere)."""
    children: dict[int, list[tuple[int, int]]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return children
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: split after it.
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append((int(entry.name), int(fields[2])))
    return children


def descendant_groups(pid: int) -> set[int]:
    """Process groups of `pid`'s descendants, which may have left its group (a task's
    `start_new_session=True` subprocess does)."""
    children = _children_map()
    groups: set[int] = set()
    todo = [pid]
    while todo:
        for child, pgid in children.get(todo.pop(), []):
            groups.add(pgid)
            todo.append(child)
    groups.discard(os.getpgrp())  # never ourselves
    return groups


def kill_group(pid: int, sig: int, *, tree: bool = False) -> None:
    """Send `sig` to the process group led by `pid` (and, with `tree`, to the groups of its
    descendants first); fall back to `pid` alone when it does not lead a group yet."""
    groups = descendant_groups(pid) if tree else set()
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:  # forked but not yet in its own group
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    except PermissionError as exc:
        log.warning("cannot signal process group %s: %s", pid, exc)
    for group in groups - {pid}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)


def describe_exit(code: int | None) -> str:
    """`code N` or `code -N (signal NAME)`, as multiprocessing reports exit codes."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"code {code} (signal {name})"
    return f"code {code}"
