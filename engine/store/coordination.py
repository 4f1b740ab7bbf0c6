"""How several schedulers share one PostgreSQL metastore: row locks and advisory locks.

Every scheduler does the same work (create runs, decide task instances, queue them); the
database decides who does which part, never a home-made consensus:

- deciding a run: its `dag_run` row is locked with `FOR UPDATE SKIP LOCKED`, so a run is
  decided by one scheduler at a time and the others pass it by;
- queueing: the candidates are read with `FOR UPDATE SKIP LOCKED` inside a transaction
  that holds the queueing advisory lock, so pools, `core.parallelism` and the per-DAG
  limits are counted and spent by one scheduler at a time and never exceeded in total;
- creating and admitting runs (max_active_runs): under the runs advisory lock;
- zombies: the stale task instances are read with `FOR UPDATE SKIP LOCKED`.
Advisory locks are transaction-scoped (`pg_advisory_xact_lock`): a scheduler that dies
mid-transaction releases them with its connection.

SQLite allows one scheduler (`engine.scheduling.locks`), so each of these is a no-op there.
"""

from __future__ import annotations

from typing import Any, TypeVarTuple

from sqlalchemy import Select, text
from sqlalchemy.orm import Session

Ts = TypeVarTuple("Ts")

#: Advisory lock keys ("dagwatch" + a letter, as bigints): queueing, run admission, and
#: the console's capacity rollup and a DAG processor's parse results (every scheduler
#: runs a writer of each).
QUEUE_LOCK = 0x646167777451
RUNS_LOCK = 0x646167777452
#: held while a scheduler rewrites minutes of the console's capacity rollup
CAPACITY_ROLLUP_LOCK = 0x646167777453
#: held while a DAG processor records one pass's files, DAGs and import errors
PARSE_RESULTS_LOCK = 0x646167777454


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def lock(session: Session, key: int) -> None:
    """Wait for the advisory lock `key`, held until the transaction ends (PostgreSQL)."""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def skip_locked(query: Select[*Ts], session: Session, *of: Any) -> Select[*Ts]:
    """`query ... FOR UPDATE [OF ...] SKIP LOCKED` on PostgreSQL; `query` unchanged on SQLite."""
    if not is_postgres(session):
        return query
    return query.with_for_update(skip_locked=True, of=list(of) or None)
