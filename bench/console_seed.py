"""Build a large metastore for the console benchmark: DAGs, runs, task instances, tries.

`build(store, dags=500, runs_per_dag=100, tasks_per_dag=20)` gives 500 DAGs, 50,000 runs
and 1,000,000 task instances, a try for each one that started (with its pool, scheduled
and queued times: the capacity page's history), transitions for each DAG's newest runs,
alerts (some warning of runs at risk), SLA misses and an audit log, inserted with bulk
INSERTs in chunks. Runs are hourly up to now; about 2% of the task instances failed (a
third of those in the last 24 h), each DAG's newest run is running, a few DAGs are
paused (their next run overdue), and the DAGs share four pools.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from engine.store import pools
from engine.store.db import Store
from engine.store.models import (
    Alert,
    AlertDelivery,
    AuditLog,
    Dag,
    DagFile,
    DagRun,
    ImportError_,
    Job,
    SlaMiss,
    StateTransition,
    TaskInstance,
    TaskTry,
)

CHUNK = 10_000
#: pool per DAG (dag index % 4) and its slots
POOLS = {"default_pool": 128, "db": 8, "api": 16, "spark": 4}
#: the newest runs of each DAG that get tries and transitions (the gantt's reads)
DETAILED_RUNS = 5
#: the alert routes (one channel each) the outbox's 5,000 alerts go to
CHANNELS = ("slack-data", "pagerduty", "email-oncall")


def _serialized(dag_id: str, tasks: int) -> dict[str, Any]:
    """A real serialized DAG (what the DAG processor writes): hourly, a chain of tasks."""
    import pendulum

    from engine import DAG, EmptyOperator, chain
    from engine.parsing.serialization import serialize_dag

    with DAG(dag_id, schedule="@hourly", start_date=pendulum.datetime(2026, 1, 1)) as dag:
        chain(*(EmptyOperator(task_id=f"task_{i:02d}") for i in range(tasks)))
    return serialize_dag(dag)


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _insert(store: Store, model: type, rows: Iterator[dict[str, Any]]) -> int:
    count = 0
    for chunk in _chunks(rows):
        with store.session() as session:
            session.execute(insert(model), chunk)
        count += len(chunk)
    return count


def build(
    store: Store,
    *,
    dags: int = 500,
    runs_per_dag: int = 100,
    tasks_per_dag: int = 20,
    now: datetime | None = None,
    seed: int = 7,
) -> dict[str, int]:
    """Fill an empty, migrated metastore; returns the row counts per table."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    rng = random.Random(seed)
    dag_ids = [f"dag_{d:04d}" for d in range(dags)]
    task_ids = [f"task_{i:02d}" for i in range(tasks_per_dag)]
    counts: dict[str, int] = {}
    counts["dag"] = _insert(
        store,
        Dag,
        (
            {
                "dag_id": dag_id,
                "fileloc": f"/dags/{dag_id}.py",
                "is_active": True,
                "is_paused": d % 50 == 0,
                "schedule": "@hourly",
                "owner": f"team_{d % 10}",
                "tags": [f"domain_{d % 7}", "bench"],
                "serialized": _serialized(dag_id, tasks_per_dag),
                "dag_hash": "0" * 64,
                "task_count": tasks_per_dag,
                "last_parsed": now,
                "next_dagrun": now + timedelta(hours=1),
                "next_dagrun_create_after": now - timedelta(minutes=30)
                if d % 50 == 0
                else now + timedelta(hours=1),
            }
            for d, dag_id in enumerate(dag_ids)
        ),
    )

    def logical(r: int) -> datetime:
        return now - timedelta(hours=runs_per_dag - r)

    def run_state(d: int, r: int) -> str:
        if r == runs_per_dag - 1:
            return "running"
        return "failed" if (d * 31 + r) % 50 == 0 else "success"

    counts["dag_run"] = _insert(
        store,
        DagRun,
        (
            {
                "dag_id": dag_id,
                "run_id": f"scheduled__{logical(r).isoformat()}",
                "run_type": "scheduled",
                "state": run_state(d, r),
                "logical_date": logical(r),
                "data_interval_start": logical(r),
                "data_interval_end": logical(r) + timedelta(hours=1),
                "queued_at": logical(r),
                "start_date": logical(r),
                "end_date": None
                if run_state(d, r) == "running"
                else logical(r) + timedelta(seconds=rng.randint(300, 900)),
                "conf": {},
                "external_trigger": False,
            }
            for d, dag_id in enumerate(dag_ids)
            for r in range(runs_per_dag)
        ),
    )

    def ti_state(d: int, r: int, t: int) -> str:
        state = run_state(d, r)
        if state == "running":
            return "success" if t < 3 else ("running" if t == 3 else "none")
        if state == "failed":
            return "success" if t < 10 else ("failed" if t == 10 else "upstream_failed")
        return "success"

    def tis() -> Iterator[dict[str, Any]]:
        for d, dag_id in enumerate(dag_ids):
            for r in range(runs_per_dag):
                start = logical(r)
                for t, task_id in enumerate(task_ids):
                    state = ti_state(d, r, t)
                    begun = start + timedelta(seconds=30 * t)
                    yield {
                        "dag_id": dag_id,
                        "run_id": f"scheduled__{start.isoformat()}",
                        "task_id": task_id,
                        "map_index": -1,
                        "state": state,
                        "try_number": 0 if state in ("none", "upstream_failed") else 1,
                        "max_tries": 1,
                        "operator": "EmptyOperator",
                        "pool": list(POOLS)[d % len(POOLS)],
                        "scheduled_at": begun - timedelta(seconds=5 + t % 7)
                        if state != "none"
                        else None,
                        "queued_at": begun if state != "none" else None,
                        "start_date": begun if state not in ("none", "upstream_failed") else None,
                        "end_date": None
                        if state in ("none", "running")
                        else begun + timedelta(seconds=20),
                        "duration": None if state in ("none", "running") else 20.0,
                        "hostname": "worker-1",
                    }

    counts["task_instance"] = _insert(store, TaskInstance, tis())
    counts.update(_details(store, dag_ids, task_ids, runs_per_dag, logical, ti_state, now))
    counts.update(_failures(store, logical(runs_per_dag - DETAILED_RUNS), rng))
    counts.update(_parsing(store, dag_ids, now, rng))
    return counts


#: error templates of the failed tries: a few problems, each with many variants
ERRORS = (
    "FileNotFoundError: [Errno 2] No such file or directory: '/data/in/{day}/part-{n}.csv'",
    "requests.exceptions.HTTPError: 503 Server Error: Service Unavailable for url: "
    "https://api.example.com/v2/orders?page={n}",
    'psycopg.OperationalError: connection to server at "10.0.{n}.7", port 5432 failed: '
    "timeout expired",
    "KeyError: 'customer_{n}'",
    "ValueError: batch {n} of {day} has {n} rows, expected more than 0",
    "TimeoutError: attempt exceeded execution_timeout of {n}.0 s",
    "zombie: no heartbeat from worker-{n} for {n} s",
)


def _failures(store: Store, newest_start: datetime, rng: random.Random) -> dict[str, int]:
    """Failed tries with errors (and their signatures, as the runner writes them): three
    tries for every failed task instance, and a first try that failed and was retried for
    one in 20 of the others, outside the newest runs (whose tries _details wrote)."""
    from sqlalchemy import delete, or_, select

    from engine.store.error_signature import signature

    with store.session(readonly=True) as session:
        rows = session.execute(
            select(
                TaskInstance.id,
                TaskInstance.dag_id,
                TaskInstance.run_id,
                TaskInstance.task_id,
                TaskInstance.state,
                TaskInstance.start_date,
                TaskInstance.pool,
            ).where(
                TaskInstance.run_id < f"scheduled__{newest_start.isoformat()}",
                or_(
                    TaskInstance.state == "failed",
                    (TaskInstance.state == "success") & (TaskInstance.id % 20 == 0),
                ),
            )
        ).all()

    def tries() -> Iterator[dict[str, Any]]:
        for ti_id, dag_id, run_id, task_id, state, start, pool in rows:
            numbers = (1, 2, 3) if state == "failed" else (1,)
            for number in numbers:
                error = rng.choice(ERRORS).format(
                    n=rng.randint(1, 9999), day=start.date().isoformat()
                )
                end = start - timedelta(seconds=60 * (len(numbers) - number))
                yield {
                    "ti_id": ti_id,
                    "dag_id": dag_id,
                    "run_id": run_id,
                    "task_id": task_id,
                    "map_index": -1,
                    "try_number": number,
                    "state": "failed" if number == 3 else "up_for_retry",
                    "start_date": end - timedelta(seconds=20),
                    "end_date": end,
                    "duration": 20.0,
                    "hostname": "worker-1",
                    "log_path": f"/logs/{dag_id}/{run_id}/{task_id}/{number}.log",
                    "error": error,
                    "error_signature": signature(error),
                    "pool": pool,
                    "pool_slots": 1,
                    "scheduled_at": end - timedelta(seconds=25),
                    "queued_at": end - timedelta(seconds=20),
                }

    # these task instances' single successful try (written by _details) is replaced
    ids = [row[0] for row in rows]
    with store.session() as session:
        for i in range(0, len(ids), CHUNK):
            session.execute(delete(TaskTry).where(TaskTry.ti_id.in_(ids[i : i + CHUNK])))
    return {"failed_tries": _insert(store, TaskTry, tries())}


def _parsing(store: Store, dag_ids: list[str], now: datetime, rng: random.Random) -> dict[str, int]:
    """One DAG file per DAG with a parse time, and 50 import errors."""
    files = _insert(
        store,
        DagFile,
        (
            {
                "fileloc": f"/dags/{dag_id}.py",
                "content_hash": "0" * 64,
                "last_parsed": now - timedelta(minutes=rng.randint(0, 600)),
                "parse_duration": round(rng.lognormvariate(-3, 1), 4),
                "dag_count": 1,
                "task_count": 20,
                "has_import_error": False,
                "timed_out": False,
            }
            for dag_id in dag_ids
        ),
    )
    errors = _insert(
        store,
        ImportError_,
        (
            {
                "filename": f"/dags/broken_{i:02d}.py",
                "timestamp": now - timedelta(minutes=i),
                "first_seen": now - timedelta(hours=i),
                "stacktrace": f"Traceback (most recent call last):\nSyntaxError: bad line {i}",
            }
            for i in range(50)
        ),
    )
    return {"dag_file": files, "import_error": errors}


def _details(
    store: Store,
    dag_ids: list[str],
    task_ids: list[str],
    runs_per_dag: int,
    logical: Any,
    ti_state: Any,
    now: datetime,
) -> dict[str, int]:
    """A try per started task instance, queued transitions for each DAG's newest runs;
    alerts, misses, audit."""
    from sqlalchemy import func, select

    newest = runs_per_dag - DETAILED_RUNS
    with store.session(readonly=True) as session:
        first, last = session.execute(
            select(func.min(TaskInstance.id), func.max(TaskInstance.id))
        ).one()
    # task instances went in in order, one id each: no need to read a million of them back
    assert last - first + 1 == len(dag_ids) * runs_per_dag * len(task_ids)

    def tries(runs: range = range(runs_per_dag)) -> Iterator[dict[str, Any]]:
        for d, dag_id in enumerate(dag_ids):
            for r in runs:
                run_id = f"scheduled__{logical(r).isoformat()}"
                for t, task_id in enumerate(task_ids):
                    state = ti_state(d, r, t)
                    if state in ("none", "upstream_failed"):
                        continue
                    begun = logical(r) + timedelta(seconds=30 * t)
                    yield {
                        "ti_id": first + (d * runs_per_dag + r) * len(task_ids) + t,
                        "dag_id": dag_id,
                        "run_id": run_id,
                        "task_id": task_id,
                        "map_index": -1,
                        "try_number": 1,
                        "state": state,
                        "start_date": begun,
                        "end_date": None if state == "running" else begun + timedelta(seconds=20),
                        "duration": None if state == "running" else 20.0,
                        "hostname": "worker-1",
                        "pool": list(POOLS)[d % len(POOLS)],
                        "pool_slots": 1,
                        "scheduled_at": begun - timedelta(seconds=5 + t % 7),
                        "queued_at": begun,
                    }

    def queued() -> Iterator[dict[str, Any]]:
        for row in tries(range(newest, runs_per_dag)):
            yield {
                "at": row["start_date"] - timedelta(seconds=2),
                "entity": "task_instance",
                "dag_id": row["dag_id"],
                "run_id": row["run_id"],
                "task_id": row["task_id"],
                "map_index": -1,
                "try_number": 1,
                "from_state": "scheduled",
                "to_state": "queued",
            }

    counts = {"task_try": _insert(store, TaskTry, tries())}
    counts["state_transition"] = _insert(store, StateTransition, queued())
    counts["alert"] = _insert(
        store,
        Alert,
        (
            {
                "fingerprint": f"bench-{i}",
                "event": "task_failed",
                "severity": "error",
                "dag_id": dag_ids[i % len(dag_ids)],
                "status": ("sent", "pending", "failed")[i % 3],
                "route": CHANNELS[i % len(CHANNELS)],
                "channel": CHANNELS[i % len(CHANNELS)],
                "attempts": 1 + i % 3,
                "created_at": now - timedelta(minutes=i),
                "payload": {},
            }
            for i in range(5_000)
        ),
    )
    counts["alert_delivery"] = _insert(store, AlertDelivery, _deliveries(now))
    counts["alert"] += _insert(
        store,
        Alert,
        (
            {
                "fingerprint": f"bench-risk-{dag_id}",
                "event": "deadline_at_risk",
                "severity": "warning",
                "route": "oncall",
                "dag_id": dag_id,
                "run_id": f"scheduled__{logical(runs_per_dag - 1).isoformat()}",
                "status": "sent",
                "attempts": 1,
                "created_at": now - timedelta(minutes=5),
                "payload": {"deadline": (now + timedelta(minutes=10)).isoformat()},
            }
            for dag_id in dag_ids[:50]
        ),
    )
    with store.session() as session:
        for name, slots in POOLS.items():
            pools.set_pool(session, name, slots)
    counts["sla_miss"] = _insert(
        store,
        SlaMiss,
        (
            {
                "kind": "task_sla",
                "dag_id": dag_ids[i % len(dag_ids)],
                "run_id": f"r{i}",
                "task_id": "task_00",
                "deadline": now - timedelta(minutes=i),
                "detected_at": now - timedelta(minutes=i),
                "state": "running",
            }
            for i in range(5_000)
        ),
    )
    counts["audit_log"] = _insert(
        store,
        AuditLog,
        (
            {
                "at": now - timedelta(minutes=i),
                "actor": f"user_{i % 5}",
                "event": "dags.trigger",
                "dag_id": dag_ids[i % len(dag_ids)],
                "extra": {},
            }
            for i in range(20_000)
        ),
    )
    counts["job"] = _insert(
        store,
        Job,
        [
            {
                "job_type": kind,
                "state": "running",
                "hostname": "bench",
                "pid": 1,
                "start_date": now,
                "latest_heartbeat": now,
                "last_loop_seconds": 0.05,
                "slots_used": 10,
                "slots_open": 22,
            }
            for kind in ("scheduler", "dag_processor")
        ].__iter__(),
    )
    return counts


def _deliveries(now: datetime) -> Iterator[dict[str, Any]]:
    """The attempts of the 5,000 alerts (ids 1..5000, as inserted): 1 to 3 each, a sent
    alert's last one accepted, every seventh attempt a timeout, latencies 0.1-3 s."""
    for i in range(5_000):
        attempts, status = 1 + i % 3, ("sent", "pending", "failed")[i % 3]
        for attempt in range(1, attempts + 1):
            accepted = status == "sent" and attempt == attempts
            timeout = not accepted and (i + attempt) % 7 == 0
            yield {
                "alert_id": i + 1,
                "attempt": attempt,
                "at": now - timedelta(minutes=i) + timedelta(seconds=10 * attempt),
                "status": "sent" if accepted else "timeout" if timeout else "failed",
                "latency": 10.0 if timeout else 0.1 + (i * 7 + attempt) % 30 / 10,
                "error": None if accepted else "HTTP 503 from the channel",
            }
