"""Which scheduled task instances may be queued now, and why the others wait.

A pure function over one tick's snapshot: the candidates (highest priority first) and
what queued and running attempts already hold. Every limit users tune is applied here,
in one place: `core.parallelism` (the executor's open slots), pools (`slots`,
`pool_slots`), `max_active_tasks` per DAG, `max_active_tis_per_dag` per task and
`max_active_tis_per_dagrun` per task and run.

Only queued and running attempts hold slots (`engine.store.scheduling.occupancy`): a task
waiting for its retry, or a sensor in reschedule mode between pokes (up_for_reschedule),
holds none, so the other tasks of its pool run meanwhile.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from engine.store.scheduling import Occupancy, TiRow


class WaitReason(StrEnum):
    """Why a task instance that is ready to run is not running."""

    PARALLELISM = "parallelism"  #: the executor has no open slot (core.parallelism)
    POOL_FULL = "pool_full"  #: its pool has fewer open slots than its pool_slots
    POOL_MISSING = "pool_missing"  #: its pool does not exist
    POOL_TOO_SMALL = "pool_too_small"  #: pool_slots exceeds the pool's size: can never run
    DAG_MAX_ACTIVE_TASKS = "dag_max_active_tasks"  #: its DAG runs max_active_tasks already
    TASK_MAX_ACTIVE_TIS = "task_max_active_tis"  #: its task runs max_active_tis_per_dag already
    #: its task runs max_active_tis_per_dagrun already in the same run
    TASK_MAX_ACTIVE_TIS_PER_RUN = "task_max_active_tis_per_dagrun"


_POOL_REASONS = frozenset(
    {WaitReason.POOL_FULL, WaitReason.POOL_MISSING, WaitReason.POOL_TOO_SMALL}
)
#: Reasons that no amount of waiting fixes: the operator must change a pool or a task.
NEVER_FITS = frozenset({WaitReason.POOL_MISSING, WaitReason.POOL_TOO_SMALL})


@dataclass(frozen=True)
class TaskLimits:
    """The per-task and per-DAG limits of one candidate, from its serialized DAG."""

    max_active_tasks: int
    max_active_tis_per_dag: int | None
    max_active_tis_per_dagrun: int | None = None


@dataclass
class Selection:
    """What to queue now, and why each other candidate waits."""

    chosen: list[TiRow] = field(default_factory=list)
    waiting: dict[int, WaitReason] = field(default_factory=dict)
    #: pool -> candidates held back by that pool (Airflow's "starving" tasks)
    starving: Counter[str] = field(default_factory=Counter)


def describe(reason: WaitReason, ti: TiRow, pool_size: int | None) -> str:
    """A sentence an operator can act on."""
    match reason:
        case WaitReason.PARALLELISM:
            return "waiting for an executor slot (core.parallelism reached)"
        case WaitReason.POOL_FULL:
            return f"pool {ti.pool!r} is full: it needs {ti.pool_slots} open slot(s)"
        case WaitReason.POOL_MISSING:
            return (
                f"pool {ti.pool!r} does not exist; create it with "
                f"`dagwatch pools set {ti.pool} SLOTS`"
            )
        case WaitReason.POOL_TOO_SMALL:
            return (
                f"can never run: it needs {ti.pool_slots} slots of pool {ti.pool!r}, "
                f"which has only {pool_size}"
            )
        case WaitReason.DAG_MAX_ACTIVE_TASKS:
            return f"DAG {ti.dag_id!r} is at max_active_tasks"
        case WaitReason.TASK_MAX_ACTIVE_TIS:
            return f"task {ti.task_id!r} is at max_active_tis_per_dag"
        case WaitReason.TASK_MAX_ACTIVE_TIS_PER_RUN:
            return f"task {ti.task_id!r} is at max_active_tis_per_dagrun in run {ti.run_id!r}"


def select_executable(
    candidates: Sequence[TiRow],
    *,
    occupancy: Occupancy,
    pool_sizes: Mapping[str, int],
    open_slots: int,
    limits_of: Callable[[TiRow], TaskLimits],
) -> Selection:
    """Greedy by priority: take each candidate that fits every limit, in order.

    A candidate that does not fit does not block lower-priority candidates that do (a
    big task waiting for its pool must not stall other pools).
    """
    selection = Selection()
    active = _Active(
        Counter(occupancy.pool_used),
        Counter(occupancy.dag_active),
        Counter(occupancy.task_active),
        Counter(occupancy.run_task_active),
    )
    for ti in candidates:
        reason = _blocked(ti, active, pool_sizes, limits_of(ti))
        if reason is None and len(selection.chosen) >= open_slots:
            reason = WaitReason.PARALLELISM
        if reason is not None:
            selection.waiting[ti.id] = reason
            if reason in _POOL_REASONS:
                selection.starving[ti.pool] += 1
            continue
        selection.chosen.append(ti)
        active.pool_used[ti.pool] += ti.pool_slots
        active.dag_active[ti.dag_id] += 1
        active.task_active[(ti.dag_id, ti.task_id)] += 1
        active.run_task_active[(ti.dag_id, ti.run_id, ti.task_id)] += 1
    return selection


@dataclass(frozen=True)
class _Active:
    """What queued, running and already chosen attempts hold, by limit."""

    pool_used: Counter[str]
    dag_active: Counter[str]
    task_active: Counter[tuple[str, str]]
    run_task_active: Counter[tuple[str, str, str]]


def _blocked(
    ti: TiRow, active: _Active, pool_sizes: Mapping[str, int], limits: TaskLimits
) -> WaitReason | None:
    size = pool_sizes.get(ti.pool)
    if size is None:
        return WaitReason.POOL_MISSING
    if ti.pool_slots > size:
        return WaitReason.POOL_TOO_SMALL
    if active.pool_used[ti.pool] + ti.pool_slots > size:
        return WaitReason.POOL_FULL
    if active.dag_active[ti.dag_id] >= limits.max_active_tasks:
        return WaitReason.DAG_MAX_ACTIVE_TASKS
    cap = limits.max_active_tis_per_dag
    if cap is not None and active.task_active[(ti.dag_id, ti.task_id)] >= cap:
        return WaitReason.TASK_MAX_ACTIVE_TIS
    cap = limits.max_active_tis_per_dagrun
    if cap is not None and active.run_task_active[(ti.dag_id, ti.run_id, ti.task_id)] >= cap:
        return WaitReason.TASK_MAX_ACTIVE_TIS_PER_RUN
    return None
