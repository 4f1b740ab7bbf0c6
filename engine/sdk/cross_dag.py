"""Cross-DAG dependencies: trigger a run of another DAG, or wait for another DAG's tasks.

Both work from inside the running task, through the process's task API
(`engine.sdk.task_api`): they read and trigger other runs without opening the metastore
themselves, and importing a DAG file stays cheap.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.exceptions import DagDefinitionError, DagwatchError, NotFound, SkipTask, TaskError
from engine.sdk.schedules import coerce_utc
from engine.sdk.sensors import BaseSensorOperator
from engine.sdk.sensors import seconds_argument as seconds_of
from engine.sdk.tasks import BaseOperator, XComArg
from engine.states import DagRunState, TaskState

if TYPE_CHECKING:
    from engine.sdk.task_api import RunRef, TaskAPI

log = logging.getLogger("engine.task")

#: XCom keys the trigger pushes (Airflow's names), for downstream tasks and links.
XCOM_RUN_ID = "trigger_run_id"
XCOM_LOGICAL_DATE_ISO = "trigger_logical_date_iso"
#: The longest actor name an audit row keeps.
_ACTOR_LEN = 250


def _states(
    values: Iterable[str] | None, kind: type[DagRunState] | type[TaskState], name: str, task_id: str
) -> tuple[str, ...]:
    """`values` as state strings of `kind`, or DagDefinitionError naming the allowed ones."""
    found = []
    for value in values or ():
        try:
            found.append(kind(value).value)
        except ValueError:
            allowed = ", ".join(state.value for state in kind)
            raise DagDefinitionError(
                f"task {task_id!r}: {name} has {value!r}, which is not a "
                f"{'DAG run' if kind is DagRunState else 'task'} state; allowed: {allowed}"
            ) from None
    return tuple(found)


def _flag(value: Any, name: str, task_id: str) -> bool:
    """A rendered boolean field: a template renders "True"/"False", which are not bools."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            raise TaskError(f"task {task_id!r}: {name} rendered to {value!r}, not true or false")
        return lowered == "true"
    return bool(value)


class TriggerDagRunOperator(BaseOperator):
    """Triggers a run of `trigger_dag_id`, optionally waiting until that run finishes.

    The new run is queued like a manual trigger (also when the target DAG is paused: it
    then waits for the DAG to be unpaused). Its run id and logical date are pushed to XCom
    under `trigger_run_id` and `trigger_logical_date_iso`. A run that already exists (same
    run id or logical date) fails the task, unless `reset_dag_run` clears it to run again
    (its conf is kept) or `skip_when_already_exists` skips the task. With
    `wait_for_completion` the task polls the run every `poke_interval` seconds until it
    reaches one of `allowed_states` (success) or `failed_states` (failure).
    """

    template_fields: Sequence[str] = (
        "trigger_dag_id",
        "trigger_run_id",
        "logical_date",
        "conf",
        "wait_for_completion",
        "skip_when_already_exists",
    )

    def __init__(
        self,
        *,
        trigger_dag_id: str,
        trigger_run_id: str | None = None,
        conf: Mapping[str, Any] | None = None,
        logical_date: str | datetime | None = None,
        reset_dag_run: bool = False,
        wait_for_completion: bool = False,
        poke_interval: float | timedelta = 60,
        allowed_states: Iterable[str] | None = (DagRunState.SUCCESS,),
        failed_states: Iterable[str] | None = (DagRunState.FAILED,),
        skip_when_already_exists: bool = False,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id", "?")
        if not isinstance(logical_date, str | datetime | XComArg | None):
            raise DagDefinitionError(
                f"task {task_id!r}: logical_date must be a string, a datetime or None, "
                f"not {type(logical_date).__name__}"
            )
        self.trigger_dag_id = trigger_dag_id
        self.trigger_run_id = trigger_run_id
        self.conf = dict(conf) if isinstance(conf, Mapping) else conf
        self.logical_date = logical_date
        self.reset_dag_run = bool(reset_dag_run)
        self.wait_for_completion = wait_for_completion
        self.poke_interval = seconds_of(poke_interval, "poke_interval", task_id)
        # as in Airflow: no allowed states means success; failed_states=[] means none
        self.allowed_states = _states(allowed_states, DagRunState, "allowed_states", task_id) or (
            DagRunState.SUCCESS.value,
        )
        self.failed_states = (
            _states(failed_states, DagRunState, "failed_states", task_id)
            if failed_states is not None
            else (DagRunState.FAILED.value,)
        )
        both = set(self.allowed_states) & set(self.failed_states)
        if both:
            raise DagDefinitionError(
                f"task {task_id!r}: {', '.join(sorted(both))} cannot be in both allowed_states "
                "and failed_states"
            )
        self.skip_when_already_exists = skip_when_already_exists
        self._sleep: Callable[[float], Any] = time.sleep
        super().__init__(**kwargs)

    def execute(self, context: Mapping[str, Any]) -> None:
        from engine.sdk import task_api

        api = task_api.current()
        dag_id = self._target()
        # rendered before anything is written, so a bad value triggers nothing
        for name in ("wait_for_completion", "skip_when_already_exists"):
            setattr(self, name, _flag(getattr(self, name), name, self.task_id))
        when = self._parsed_logical_date()
        run_id = str(self.trigger_run_id) if self.trigger_run_id else f"manual__{when.isoformat()}"
        run = self._trigger(api, dag_id, run_id, when, self._parsed_conf(), context)
        ti = context["ti"]
        ti.xcom_push(XCOM_RUN_ID, run.run_id)
        ti.xcom_push(XCOM_LOGICAL_DATE_ISO, run.logical_date.isoformat())
        if self.wait_for_completion:
            self._wait(api, dag_id, run.run_id)

    def _target(self) -> str:
        dag_id = self.trigger_dag_id
        if not isinstance(dag_id, str) or not dag_id.strip():
            raise TaskError(
                f"task {self.task_id!r}: trigger_dag_id must be a DAG id, not {dag_id!r}"
            )
        return dag_id

    def _parsed_logical_date(self) -> datetime:
        """The rendered logical_date as aware UTC (now when unset; naive values are UTC)."""
        value = self.logical_date
        if value is None or value == "":
            return coerce_utc(datetime.now(UTC))
        if isinstance(value, datetime):
            return coerce_utc(value)
        import pendulum

        try:
            parsed = pendulum.parse(str(value))
        except (ValueError, TypeError) as exc:
            raise TaskError(
                f"task {self.task_id!r}: logical_date {value!r} is not a date and time: {exc}"
            ) from None
        if not isinstance(parsed, datetime):
            raise TaskError(f"task {self.task_id!r}: logical_date {value!r} is not a date and time")
        return coerce_utc(parsed)

    def _parsed_conf(self) -> dict[str, Any] | None:
        conf = self.conf
        if isinstance(conf, str):  # a template rendered to text, or JSON given as a string
            try:
                conf = json.loads(conf) if conf.strip() else None
            except json.JSONDecodeError as exc:
                raise TaskError(f"task {self.task_id!r}: conf is not valid JSON: {exc}") from None
        if conf is None:
            return None
        if not isinstance(conf, Mapping):
            raise TaskError(
                f"task {self.task_id!r}: conf must be a dict, not {type(conf).__name__}"
            )
        try:
            json.dumps(conf)
        except (TypeError, ValueError) as exc:
            raise TaskError(
                f"task {self.task_id!r}: conf is not JSON-serializable: {exc}"
            ) from None
        return dict(conf)

    def _trigger(
        self,
        api: TaskAPI,
        dag_id: str,
        run_id: str,
        when: datetime,
        conf: dict[str, Any] | None,
        context: Mapping[str, Any],
    ) -> RunRef:
        """Create the run, or deal with the one that already has this run id or date."""
        ti = context["ti"]
        actor = f"task {ti.dag_id}.{ti.task_id} ({ti.run_id})"[:_ACTOR_LEN]
        try:
            run = api.trigger_dag(dag_id, conf=conf, logical_date=when, run_id=run_id, actor=actor)
        except NotFound as exc:
            raise TaskError(
                f"task {self.task_id!r}: cannot trigger DAG {dag_id!r}: {exc}"
            ) from None
        except DagwatchError as exc:
            existing = api.find_run(dag_id, run_id, when)
            if existing is None:  # invalid conf for the DAG's params, bad run id...
                raise TaskError(
                    f"task {self.task_id!r}: cannot trigger DAG {dag_id!r}: {exc}"
                ) from None
            return self._on_existing(api, existing, str(exc), actor)
        log.info("triggered DAG %s: run %s at %s", dag_id, run.run_id, run.logical_date)
        return run

    def _on_existing(self, api: TaskAPI, run: RunRef, reason: str, actor: str) -> RunRef:
        """Clear the run (reset_dag_run), skip (skip_when_already_exists), or fail."""
        if self.reset_dag_run:
            log.info("clearing the existing run %s of DAG %s", run.run_id, run.dag_id)
            for warning in api.clear_run(run.dag_id, run.run_id, actor=actor):
                log.warning("%s", warning)
            return run
        if self.skip_when_already_exists:
            raise SkipTask(
                f"DAG {run.dag_id!r} already has the run {run.run_id!r} at "
                f"{run.logical_date.isoformat()}; skipping (skip_when_already_exists)"
            )
        raise TaskError(
            f"task {self.task_id!r}: {reason}. Set reset_dag_run=True to clear and re-run it, "
            "or skip_when_already_exists=True to skip this task instead"
        )

    def _wait(self, api: TaskAPI, dag_id: str, run_id: str) -> None:
        """Poll the run's state until it is allowed (return) or failed (raise)."""
        while True:
            log.info(
                "waiting for run %s of DAG %s to reach %s ...",
                run_id,
                dag_id,
                ", ".join(self.allowed_states),
            )
            self._sleep(self.poke_interval)
            try:
                state = api.run_state(dag_id, run_id)
            except NotFound:
                raise TaskError(
                    f"task {self.task_id!r}: run {run_id!r} of DAG {dag_id!r} was deleted "
                    "while waiting for it"
                ) from None
            if state in self.failed_states:
                raise TaskError(
                    f"task {self.task_id!r}: run {run_id!r} of DAG {dag_id!r} ended in state "
                    f"{state!r} (failed_states: {', '.join(self.failed_states)})"
                )
            if state in self.allowed_states:
                log.info("run %s of DAG %s reached the allowed state %s", run_id, dag_id, state)
                return


class ExternalTaskSensor(BaseSensorOperator):
    """Waits for tasks of another DAG (or its whole run) at this run's logical date.

    The other DAG's run is the one whose logical date equals this run's, shifted back by
    `execution_delta`, or the date(s) `execution_date_fn(logical_date, **context)` returns.
    Without a task id (or group) it waits for the DAG run itself. The wait ends when every
    awaited task (or run) is in `allowed_states` (default: success); any in `failed_states`
    fails the sensor (skips it with `soft_fail`), any in `skipped_states` skips it. With
    `check_existence` a missing DAG, task or group fails the first poke at once.
    """

    template_fields: Sequence[str] = (
        "external_dag_id",
        "external_task_id",
        "external_task_ids",
        "external_task_group_id",
    )

    def __init__(
        self,
        *,
        external_dag_id: str,
        external_task_id: str | None = None,
        external_task_ids: Collection[str] | None = None,
        external_task_group_id: str | None = None,
        allowed_states: Iterable[str] | None = None,
        skipped_states: Iterable[str] | None = None,
        failed_states: Iterable[str] | None = None,
        execution_delta: timedelta | None = None,
        execution_date_fn: Callable[..., Any] | None = None,
        check_existence: bool = False,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id", "?")
        ids: Any = external_task_ids
        if not isinstance(ids, XComArg):  # an XComArg is a list known only at run time
            ids = list(ids) if ids else None
        _check_targets(task_id, external_task_id, ids, external_task_group_id)
        if external_task_id is not None:
            ids = [external_task_id]
        kind = TaskState if ids is not None or external_task_group_id is not None else DagRunState
        self.allowed_states = _states(allowed_states, kind, "allowed_states", task_id) or (
            kind("success").value,
        )
        self.skipped_states = _states(skipped_states, kind, "skipped_states", task_id)
        self.failed_states = _states(failed_states, kind, "failed_states", task_id)
        every = [*self.allowed_states, *self.skipped_states, *self.failed_states]
        if len(set(every)) != len(every):
            raise DagDefinitionError(
                f"task {task_id!r}: a state appears twice across allowed_states, skipped_states "
                "and failed_states"
            )
        if execution_delta is not None and execution_date_fn is not None:
            raise DagDefinitionError(
                f"task {task_id!r}: give execution_delta or execution_date_fn, not both"
            )
        if execution_delta is not None and not isinstance(execution_delta, timedelta):
            raise DagDefinitionError(
                f"task {task_id!r}: execution_delta must be a timedelta, not {execution_delta!r}"
            )
        if execution_date_fn is not None and not callable(execution_date_fn):
            raise DagDefinitionError(
                f"task {task_id!r}: execution_date_fn must be callable, not {execution_date_fn!r}"
            )
        self.external_dag_id = external_dag_id
        self.external_task_id = external_task_id
        self.external_task_ids = ids
        self.external_task_group_id = external_task_group_id
        self.execution_delta = execution_delta
        self.execution_date_fn = execution_date_fn
        self.check_existence = bool(check_existence)
        self._has_checked_existence = False
        self._group_task_ids: list[str] | None = None
        super().__init__(**kwargs)

    # -- what to look at --------------------------------------------------------------

    def _dates(self, context: Mapping[str, Any]) -> list[datetime]:
        """The external logical dates to wait for, as aware UTC, without repeats."""
        logical_date = context["logical_date"]
        if self.execution_delta is not None:
            found: Any = logical_date - self.execution_delta
        elif self.execution_date_fn is not None:
            found = self._call_date_fn(logical_date, context)
        else:
            found = logical_date
        dates = found if isinstance(found, list | tuple) else [found]
        bad = [value for value in dates if not isinstance(value, datetime)]
        if bad:
            raise TaskError(
                f"task {self.task_id!r}: execution_date_fn must return a datetime or a list of "
                f"them, not {bad[0]!r}"
            )
        return list(dict.fromkeys(coerce_utc(value) for value in dates))

    def _call_date_fn(self, logical_date: datetime, context: Mapping[str, Any]) -> Any:
        """Airflow's call: the logical date first, then the context keys the function names."""
        from engine.sdk.operators import call_python

        assert self.execution_date_fn is not None
        others = {k: v for k, v in context.items() if k not in ("logical_date", "execution_date")}
        others["context"] = context  # Airflow also passes the whole context under this name
        return call_python(self.execution_date_fn, [logical_date], {}, others)

    def _target_ids(self) -> list[str] | None:
        """The rendered external task ids (None: the DAG run or a group)."""
        ids = self.external_task_ids
        if ids is None:
            return None
        if isinstance(ids, str) or not all(isinstance(task_id, str) for task_id in ids):
            raise TaskError(
                f"task {self.task_id!r}: external_task_ids must be a list of task ids, not {ids!r}"
            )
        if len(set(ids)) != len(ids):
            raise TaskError(f"task {self.task_id!r}: external_task_ids has duplicates: {ids!r}")
        return list(ids)

    def _describe(self) -> str:
        dag = f"DAG {self.external_dag_id!r}"
        if self.external_task_ids is not None:
            return f"external task(s) {', '.join(self.external_task_ids)} of {dag}"
        if self.external_task_group_id is not None:
            return f"external task group {self.external_task_group_id!r} of {dag}"
        return f"the run of external {dag}"

    # -- poking -------------------------------------------------------------------------

    def poke(self, context: Mapping[str, Any]) -> bool:
        from engine.sdk import task_api

        dates = self._dates(context)
        task_ids = self._target_ids()
        shown = ", ".join(date.isoformat() for date in dates) or "(no dates)"
        log.info("poking for %s at %s ...", self._describe(), shown)
        api = task_api.current()
        if (self.check_existence and not self._has_checked_existence) or (
            self.external_task_group_id is not None and self._group_task_ids is None
        ):
            self._inspect_external_dag(api)
        if self.external_task_group_id is not None:
            # until the group is known, wait for a task of that name, as Airflow does
            task_ids = self._group_task_ids or [self.external_task_group_id]
        if not dates:
            return True  # nothing to wait for (an execution_date_fn returned [])
        found = api.task_states(self.external_dag_id, task_ids, dates)
        return self._judge(found, task_ids, dates)

    def _inspect_external_dag(self, api: TaskAPI) -> None:
        """Check that what we wait for exists; learn the members of the task group."""
        dag_id = self.external_dag_id
        info = api.dag_info(dag_id)
        group = self.external_task_group_id
        if info.exists and group is not None and group in info.task_groups:
            self._group_task_ids = list(info.task_groups[group])
        if not self.check_existence or self._has_checked_existence:
            return
        if not info.exists:
            raise TaskError(f"task {self.task_id!r}: the external DAG {dag_id!r} does not exist")
        if not info.active:
            raise TaskError(
                f"task {self.task_id!r}: the external DAG {dag_id!r} was deleted (its file is "
                "gone or no longer defines it)"
            )
        for task_id in self._target_ids() or ():
            if task_id not in info.task_ids:
                raise TaskError(
                    f"task {self.task_id!r}: the external task {task_id!r} does not exist in "
                    f"DAG {dag_id!r}"
                )
        if group is not None and group not in info.task_groups:
            raise TaskError(
                f"task {self.task_id!r}: the external task group {group!r} does not exist in "
                f"DAG {dag_id!r}"
            )
        self._has_checked_existence = True

    def _judge(
        self,
        found: dict[str, list[tuple[str, str]]],
        task_ids: list[str] | None,
        dates: list[datetime],
    ) -> bool:
        """Fail, skip, or say whether every awaited task (or run) is in an allowed state."""
        seen = [
            (date, name, state) for date in dates for name, state in found.get(date.isoformat(), [])
        ]
        for states, verb in ((self.failed_states, "failed"), (self.skipped_states, "skipped")):
            hits = [
                f"{name} at {date.isoformat()} is {state}"
                for date, name, state in seen
                if state in states
            ]
            if not hits:
                continue
            message = (
                f"task {self.task_id!r}: {self._describe()} reached a state in {verb}_states: "
                f"{'; '.join(hits)}"
            )
            if verb == "skipped":
                raise SkipTask(f"{message}. Skipping.")
            if self.soft_fail:
                raise SkipTask(f"{message}. Skipping due to soft_fail.")
            raise TaskError(message)
        wanted = task_ids if task_ids is not None else [self.external_dag_id]
        for date in dates:
            entries = found.get(date.isoformat(), [])
            for name in wanted:
                mine = [state for other, state in entries if other == name]
                if not mine or any(state not in self.allowed_states for state in mine):
                    return False
        return True


def _check_targets(
    task_id: str,
    external_task_id: str | None,
    external_task_ids: list[str] | None,
    external_task_group_id: str | None,
) -> None:
    """At most one of a task id, a list of task ids or a task group, as in Airflow."""
    given = [
        name
        for name, value in (
            ("external_task_id", external_task_id),
            ("external_task_ids", external_task_ids),
            ("external_task_group_id", external_task_group_id),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise DagDefinitionError(
            f"task {task_id!r}: give only one of external_task_id, external_task_ids and "
            f"external_task_group_id, not {' and '.join(given)}"
        )
    if external_task_ids is not None and not isinstance(external_task_ids, XComArg):
        if len(set(external_task_ids)) != len(external_task_ids):
            raise DagDefinitionError(
                f"task {task_id!r}: external_task_ids has duplicates: {external_task_ids!r}"
            )
