"""Which running runs the scheduler decides at its next tick, and how much of each.

Between ticks the scheduler notes what changed: an attempt ended (that task changed), a
run started (decide it whole). A tick takes the notes: it decides the runs that changed,
each on the tasks that changed and what lies downstream of them; once a loop interval it
makes a full pass over every running run instead, on whatever still waits to be decided
(which is how a retry whose delay ran out is found).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RunChange:
    """What one run's decision covers this tick."""

    #: read and decide the whole run (a new run)
    whole: bool = False
    #: a full pass: decide the tasks that still wait, as the metastore has them
    waiting: bool = False
    #: the tasks that changed: they and what lies downstream of them are decided
    tasks: frozenset[str] = frozenset()


WHOLE = RunChange(whole=True)
WAITING = RunChange(waiting=True)


class DirtyRuns:
    """The notes between two ticks: each run that changed, with what changed in it."""

    def __init__(self) -> None:
        #: (dag_id, run_id) -> the task ids that changed, or None: the whole run
        self._runs: dict[tuple[str, str], set[str] | None] = {}

    def task_changed(self, dag_id: str, run_id: str, task_id: str) -> None:
        """A task instance of the run changed (an attempt ended, a zombie was failed...)."""
        tasks = self._runs.setdefault((dag_id, run_id), set())
        if tasks is not None:  # a run to decide whole covers it already
            tasks.add(task_id)

    def run_changed(self, dag_id: str, run_id: str) -> None:
        """The whole run is to be decided (it just started)."""
        self._runs[(dag_id, run_id)] = None

    def put_back(self, run: Any, change: RunChange) -> None:
        """A run this tick could not decide (another scheduler holds it): next tick. What
        a full pass found waiting needs no note: the next full pass finds it again."""
        if change.whole:
            self.run_changed(run.dag_id, run.run_id)
        for task_id in change.tasks:
            self.task_changed(run.dag_id, run.run_id, task_id)

    def take(self, running: Sequence[Any], *, full: bool) -> list[tuple[Any, RunChange]]:
        """The running runs to decide now, with what to decide in each; the notes start
        afresh. On a `full` pass every running run (whole if noted so, else what waits),
        else the noted ones. Notes about runs no longer running are dropped."""
        notes, self._runs = self._runs, {}
        changes = []
        for run in running:
            key = (run.dag_id, run.run_id)
            if key in notes and notes[key] is None:
                changes.append((run, WHOLE))
            elif full:
                changes.append((run, WAITING))
            elif key in notes:
                changes.append((run, RunChange(tasks=frozenset(notes[key] or ()))))
        return changes
