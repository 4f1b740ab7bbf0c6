"""The exception tree: one base, a few layers, so callers catch at the right level.

A subclass's docstring is its default message.
"""

from __future__ import annotations

from datetime import datetime


class DagwatchError(Exception):
    """A dagwatch error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(DagwatchError):
    """Invalid configuration."""


class DagDefinitionError(DagwatchError):
    """The DAG file defines something dagwatch cannot run."""


class CycleError(DagDefinitionError):
    """The DAG has a cycle."""


class DuplicateTaskIdError(DagDefinitionError):
    """Two tasks in one DAG share a task id."""


class ParamValidationError(DagwatchError):
    """A DAG param does not match its schema."""


class StoreError(DagwatchError):
    """The metastore refused an operation."""


class IllegalTransition(StoreError):
    """That state transition is not allowed."""


class TransitionConflict(StoreError):
    """The row is not in the expected state (it changed, or does not exist)."""


class NotFound(StoreError):
    """No such object in the metastore."""


class TaskError(DagwatchError):
    """A task attempt failed."""


class TemplateError(TaskError):
    """A templated field could not be rendered."""


class TaskTimeout(TaskError):
    """The attempt ran longer than its execution_timeout."""


class FailTaskNoRetry(TaskError):
    """Raise inside a task to fail it without using its remaining retries."""


class SensorTimeout(FailTaskNoRetry):
    """The sensor's condition was not met within its timeout."""

    # no retry, as in Airflow: another try would only wait again


class SkipTask(Exception):
    """Raise inside a task to end it as skipped instead of failed."""


class RescheduleTask(Exception):
    """End this attempt and run the task again at `reschedule_date`, without using a try.

    What a sensor in reschedule mode raises between pokes (Airflow's
    AirflowRescheduleException): the task instance waits in up_for_reschedule, holding
    no executor or pool slot.
    """

    def __init__(self, reschedule_date: datetime) -> None:
        super().__init__(f"rescheduled to {reschedule_date.isoformat()}")
        self.reschedule_date = reschedule_date
