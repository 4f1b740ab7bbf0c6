"""Expanding mapped tasks: once a mapped task's inputs are known, its placeholder task
instance (map index -1) becomes one instance per element, before the run's next decision.

Shared by the scheduler and `dags test`. Reads only what the decision already read plus
the pushed values of the inputs (one query per tick for all runs); writes go through the
metastore's transition path, so listeners and the audit trail see them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.scheduling import deps
from engine.sdk import mapping
from engine.states import TaskState
from engine.store import scheduling, transitions

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ready:
    """A mapped task of one run whose inputs have all succeeded."""

    run_key: tuple[str, str]
    task: Any
    placeholder: Any  #: its task instance row with map index -1, in state none
    existing: dict[int, Any]  #: rows of earlier map indexes (a re-expansion after a clear)
    mapped_counts: dict[str, int]  #: input task id -> its instance count, for mapped inputs


def ready_to_expand(
    run_key: tuple[str, str], dag: Any, rows: list[Any], deciding: Iterable[str] | None
) -> list[Ready]:
    """The mapped tasks among `deciding` (None: all) whose placeholder waits and whose
    input tasks all succeeded."""
    mapped = [task for task in dag.tasks if task.is_mapped]
    if not mapped:
        return []
    ids = {task.task_id for task in mapped}
    wanted = ids if deciding is None else ids & set(deciding)
    if not wanted:
        return []
    mine: dict[str, list[Any]] = {}
    for row in rows:
        if row.task_id in wanted:
            mine.setdefault(row.task_id, []).append(row)
    states, instances = deps.states_of(rows)
    found = []
    for task in mapped:
        if task.task_id not in wanted:
            continue
        own = mine.get(task.task_id, [])
        placeholder = next((r for r in own if r.map_index < 0), None)
        if placeholder is None or placeholder.state is not TaskState.NONE:
            continue
        inputs = task.mapping_inputs
        if any(states.get(task_id) is not TaskState.SUCCESS for task_id in inputs):
            continue
        existing = {r.map_index: r for r in own if r.map_index >= 0}
        counts = {t: len(instances[t]) for t in inputs if dag.task_dict[t].is_mapped}
        found.append(Ready(run_key, task, placeholder, existing, counts))
    return found


def expand(
    session: Session, ready: list[Ready], now: datetime, max_length: int
) -> set[tuple[str, str]]:
    """Expand each ready mapped task; returns the runs whose task instances changed."""
    wanted = {
        (*item.run_key, source["task_id"], source["key"])
        for item in ready
        for source in item.task.mapping["sources"]
        if "task_id" in source and source["task_id"] not in item.mapped_counts
    }
    pushed = scheduling.pushed_values(session, wanted)
    changed = set()
    for item in ready:
        values = {
            (task_id, key): value
            for (dag_id, run_id, task_id, key), value in pushed.items()
            if (dag_id, run_id) == item.run_key
        }
        _expand_one(session, item, values, now, max_length)
        changed.add(item.run_key)
    return changed


def _expand_one(
    session: Session,
    item: Ready,
    pushed: dict[tuple[str, str], Any],
    now: datetime,
    max_length: int,
) -> None:
    spec, placeholder = item.task.mapping, item.placeholder
    (dag_id, run_id), task_id = item.run_key, placeholder.task_id
    where = f"{dag_id}.{task_id} in run {run_id}"
    try:
        length = mapping.expanded_length(spec["sources"], spec["kind"], pushed, item.mapped_counts)
        if length > max_length:
            raise ValueError(
                f"cannot expand: {length} elements exceed core.max_map_length ({max_length})"
            )
    except ValueError as exc:
        log.error("mapped task %s: %s", where, exc)
        transitions.transition_task_instances(
            session, [placeholder.id], expected=TaskState.NONE, to=TaskState.FAILED, at=now,
            reason=str(exc), values={"end_date": now},
        )  # fmt: skip
        return
    if length == 0:
        transitions.transition_task_instances(
            session, [placeholder.id], expected=TaskState.NONE, to=TaskState.SKIPPED, at=now,
            reason="mapped over zero elements",
        )  # fmt: skip
        return
    log.info("mapped task %s expanded into %d task instances", where, length)
    if not item.existing:
        scheduling.set_map_index(session, placeholder.id, 0)
        scheduling.add_map_indexes(session, placeholder.id, range(1, length))
        return
    # again after a clear: reuse the earlier instances, add the missing ones
    reused = [row.id for i, row in item.existing.items() if i < length]
    transitions.transition_task_instances(
        session, reused, expected=TaskState.REMOVED, to=TaskState.NONE, at=now,
        reason="mapped task expanded again",
    )  # fmt: skip
    scheduling.add_map_indexes(
        session, placeholder.id, [i for i in range(length) if i not in item.existing]
    )
    transitions.transition_task_instances(
        session, [placeholder.id], expected=TaskState.NONE, to=TaskState.REMOVED, at=now,
        reason="mapped task expanded",
    )  # fmt: skip
