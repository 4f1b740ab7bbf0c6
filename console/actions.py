"""What the console's buttons do: preview an action, then do it through engine.api.

Every action is previewed first (what it will change: how many task instances, in which
states), needs a user allowed to act, and goes through the same engine API as the CLI,
which writes the audit_log row with the user's name in the same transaction.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from console.users import User
from engine import api
from engine.exceptions import DagwatchError
from engine.sdk.params import ParamsDict
from engine.secrets import is_sensitive_key
from engine.states import DAG_RUN_ACTIVE
from engine.store import pools as pool_store
from engine.store import variables as variable_store
from engine.store.audit import record_audit
from engine.store.db import Store
from engine.store.models import Dag, DagRun

if TYPE_CHECKING:
    from engine.config import Config


class NotAllowed(DagwatchError):
    """This user's role may not do that."""


@dataclass(frozen=True)
class Preview:
    """What an action will change, in words and in counts per state."""

    summary: str
    states: dict[str, int] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)  # what it will leave alone, and why


def require_operator(user: User) -> None:
    """Viewers read; operators and admins act."""
    if not user.can_act:
        raise NotAllowed(f"{user.name} is a {user.role}: only operators and admins may act")


def parse_conf(text: str, serialized_params: dict[str, Any]) -> dict[str, Any]:
    """The run conf from the form: a JSON object, valid against the DAG's params."""
    text = text.strip() or "{}"
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DagwatchError(
            f"conf is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            'expected an object such as {"n": 3}'
        ) from None
    if not isinstance(conf, dict):
        raise DagwatchError(f"conf must be a JSON object, not {type(conf).__name__}")
    ParamsDict.load(serialized_params).resolve(conf)  # raises ParamValidationError
    return conf


def preview_trigger(store: Store, dag_id: str, conf: dict[str, Any]) -> Preview:
    """A new queued run with one task instance per task (mapped tasks expand later)."""
    with store.session(readonly=True) as session:
        row = session.get(Dag, dag_id)
        if row is None:
            raise DagwatchError(f"no DAG {dag_id!r}")
        active = session.execute(
            select(func.count())
            .select_from(DagRun)
            .where(DagRun.dag_id == dag_id, DagRun.state.in_(sorted(DAG_RUN_ACTIVE)))
        ).scalar_one()
        tasks, paused = row.task_count, row.is_paused
    note = " The DAG is paused: the run waits until it is unpaused." if paused else ""
    return Preview(
        f"Creates 1 queued run of {dag_id} with {tasks} task instances in state none "
        f"(conf keys: {', '.join(sorted(conf)) or 'none'}); {active} runs are active now.{note}",
        {"none": tasks},
    )


def trigger(store: Store, user: User, dag_id: str, conf: dict[str, Any]) -> str:
    """Queue a manual run; returns its run_id."""
    require_operator(user)
    return api.trigger_dag(store, dag_id, conf=conf, actor=user.name).run_id


def preview_pause(store: Store, dag_id: str, paused: bool) -> Preview:
    """Pausing stops new runs; active runs finish their running tasks."""
    with store.session(readonly=True) as session:
        active = session.execute(
            select(DagRun.state, func.count())
            .where(DagRun.dag_id == dag_id, DagRun.state.in_(sorted(DAG_RUN_ACTIVE)))
            .group_by(DagRun.state)
        ).all()
    states = {state: int(n) for state, n in active}
    verb = "Pauses" if paused else "Unpauses"
    effect = (
        "no new runs are created and queued runs wait"
        if paused
        else "the scheduler creates its next run from now"
    )
    return Preview(f"{verb} {dag_id}: {effect}. Active runs: {states or 'none'}.", states)


def set_paused(store: Store, user: User, dag_id: str, paused: bool) -> bool:
    """Pause or unpause; returns whether it changed."""
    require_operator(user)
    return api.set_paused(store, dag_id, paused, actor=user.name)


def preview_clear(
    store: Store,
    dag_id: str,
    *,
    run_id: str | None,
    task_regex: str | None,
    downstream: bool,
    only_failed: bool,
) -> Preview:
    """The clear's dry run: which task instances go back to none, from which states."""
    result = api.clear_task_instances(
        store,
        dag_id,
        run_id=run_id,
        task_regex=task_regex,
        downstream=downstream,
        only_failed=only_failed,
        dry_run=True,
    )
    states = dict(Counter(ref.state for ref in result.cleared))
    blocked = [
        f"{ref.task_id}{'' if ref.map_index < 0 else f'[{ref.map_index}]'} ({ref.state}): "
        f"{ref.reason}"
        for ref in result.left_running
    ]
    return Preview(
        f"Clears {len(result.cleared)} task instances (back to none, to run again) and "
        f"re-queues {len(result.requeued_runs)} finished runs.",
        states,
        blocked,
    )


def clear(
    store: Store,
    user: User,
    dag_id: str,
    *,
    run_id: str | None,
    task_regex: str | None,
    downstream: bool,
    only_failed: bool,
) -> int:
    """Clear; returns how many task instances were cleared."""
    require_operator(user)
    result = api.clear_task_instances(
        store,
        dag_id,
        run_id=run_id,
        task_regex=task_regex,
        downstream=downstream,
        only_failed=only_failed,
        actor=user.name,
    )
    return len(result.cleared)


def preview_mark(store: Store, dag_id: str, run_id: str, state: str) -> Preview:
    """Marking's dry run: how many task instances move, from which states, to which."""
    result = api.mark_run(store, dag_id, run_id, state, dry_run=True)
    moves = Counter(f"{ref.state} -> {to}" for ref, to in result.changed)
    blocked = [
        f"{ref.task_id}{'' if ref.map_index < 0 else f'[{ref.map_index}]'} ({ref.state}): "
        "executing; it records its own outcome"
        for ref in result.left_running
    ]
    return Preview(
        f"Marks run {run_id} ({result.run_state}) {state}, moving {len(result.changed)} "
        "task instances.",
        dict(moves),
        blocked,
    )


def mark(store: Store, user: User, dag_id: str, run_id: str, state: str) -> int:
    """Mark a run success or failed; returns how many task instances moved."""
    require_operator(user)
    return len(api.mark_run(store, dag_id, run_id, state, actor=user.name).changed)


def require_admin(user: User) -> None:
    """Pools and variables are for admins."""
    if not user.can_admin:
        raise NotAllowed(f"{user.name} is a {user.role}: only admins manage pools and variables")


def set_pool(store: Store, user: User, name: str, slots: int, description: str | None) -> str:
    """Create a pool or change its slots, audited as the CLI does."""
    require_admin(user)
    with store.session() as session:
        pool = pool_store.set_pool(session, name, slots, description or None)
        record_audit(
            session, actor=user.name, event="pools.set", extra={"pool": name, "slots": slots}
        )
    return f"pool {pool.name}: {pool.slots} slots, {pool.open_slots} open"


def set_variable(
    store: Store, user: User, config: Config, key: str, value: str, secret: bool
) -> str:
    """Create or replace a variable, audited (the value never is)."""
    require_admin(user)
    is_secret = secret or is_sensitive_key(key)
    with store.session() as session:
        variable_store.set_variable(session, key, value, is_secret=is_secret, config=config)
        record_audit(
            session, actor=user.name, event="variables.set", extra={"key": key, "secret": is_secret}
        )
    return f"variable {key} set" + (" (secret)" if is_secret else "")
