"""Operator actions on DAGs and runs: trigger, pause, backfill, clear, mark; the reads behind them.

One place for the CLI and the console, so both get the same checks, the same state write
path (`engine.store.transitions`) and the same audit trail: each action is one transaction
that includes its audit_log row, so it happens, audited, or not at all. These functions
only write the metastore: the scheduler starts QUEUED runs (within max_active_runs, for
unpaused DAGs) and evaluates task instances in state none by their trigger rules.
"""

from __future__ import annotations

from engine.api.clearing import ClearResult, TaskRef, clear_task_instances
from engine.api.marking import MarkResult, mark_run
from engine.api.runs import (
    MAX_BACKFILL_RUNS,
    backfill,
    backfill_intervals,
    dag_run_state,
    list_runs,
    set_paused,
    task_states,
    trigger_dag,
)

__all__ = [
    "MAX_BACKFILL_RUNS",
    "ClearResult",
    "MarkResult",
    "TaskRef",
    "backfill",
    "backfill_intervals",
    "clear_task_instances",
    "dag_run_state",
    "list_runs",
    "mark_run",
    "set_paused",
    "task_states",
    "trigger_dag",
]
