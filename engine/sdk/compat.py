"""Airflow 2 idioms, accepted so DAG files written for Airflow 2 run with only their
imports changed (see docs/coming-from-airflow.md).

Each idiom works as Airflow 2.x had it and emits one `DagwatchDeprecationWarning` per DAG
file naming its Airflow 3 spelling. A DAG file that uses none of them sees no difference.

The Airflow 2 date variables (`execution_date`, `next_ds`, `prev_ds`...) are derived
from the run's data interval exactly as Airflow 2.x's `get_template_context` did:

- `execution_date` is the logical date;
- for a manually triggered run, `next_*` and `prev_*` are the logical date itself;
- otherwise `next_execution_date` is the start of the interval that follows the run's
  (its data interval end for a scheduled run) and `prev_execution_date` the schedule
  point before the logical date, both None for `@once` and `schedule=None` DAGs;
- `tomorrow_ds`/`yesterday_ds` are the logical date plus/minus one day;
- `prev_execution_date_success` is the logical date of the latest successful run before
  this one.
"""

from __future__ import annotations

import functools
import io
import logging
import re
import sys
import tokenize
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum

if TYPE_CHECKING:
    from types import FrameType

    from engine.sdk.schedules import Timetable
    from engine.sdk.task_api import TaskAPI

_ENGINE_DIR = str(Path(__file__).resolve().parents[1])


class DagwatchDeprecationWarning(FutureWarning):
    """An Airflow 2 idiom that works but has an Airflow 3 spelling.

    A FutureWarning (shown by default) because its reader is the DAG file's author.
    """


#: (DAG file, idiom) pairs already warned about in this process: one warning each.
_warned: set[tuple[str, str]] = set()
#: DAG file -> the Airflow 2 context variables its source names (see `check_source`)
_mentions: dict[str, frozenset[str]] = {}

#: Airflow 2 context variable -> its Airflow 3 spelling (Airflow 2.x's own advice).
DEPRECATED_CONTEXT: dict[str, str] = {
    "execution_date": "logical_date",
    "next_execution_date": "data_interval_end",
    "next_ds": "{{ data_interval_end | ds }}",
    "next_ds_nodash": "{{ data_interval_end | ds_nodash }}",
    "prev_execution_date": "data_interval_start of the previous run (no direct equivalent)",
    "prev_ds": "{{ macros.ds_add(ds, -1) }} for a daily DAG (no direct equivalent)",
    "prev_ds_nodash": "{{ macros.ds_add(ds, -1) }} without dashes (no direct equivalent)",
    "prev_execution_date_success": "prev_data_interval_start_success",
    "tomorrow_ds": "{{ macros.ds_add(ds, 1) }}",
    "tomorrow_ds_nodash": "{{ macros.ds_add(ds, 1) | replace('-', '') }}",
    "yesterday_ds": "{{ macros.ds_add(ds, -1) }}",
    "yesterday_ds_nodash": "{{ macros.ds_add(ds, -1) | replace('-', '') }}",
}

_CONTEXT_WORDS = re.compile(r"\b(" + "|".join(sorted(DEPRECATED_CONTEXT, key=len)[::-1]) + r")\b")


def _outside_frame() -> tuple[str, int]:
    """The file and line of the first frame outside dagwatch's engine (the DAG file)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_ENGINE_DIR) and "importlib" not in name:
            return name, frame.f_lineno
        frame = frame.f_back
    return "<unknown>", 0


def deprecated(
    idiom: str, spelling: str, *, fileloc: str | None = None, lineno: int | None = None
) -> None:
    """Warn once per DAG file that `idiom` is Airflow 2's, naming the Airflow 3 spelling."""
    where, line = _outside_frame() if fileloc is None else (fileloc, lineno or 0)
    if lineno is not None:
        line = lineno
    key = (where, idiom)
    if key in _warned:
        return
    _warned.add(key)
    message = f"{idiom} is an Airflow 2 idiom, accepted by dagwatch; Airflow 3 spelling: {spelling}"
    warnings.warn_explicit(message, DagwatchDeprecationWarning, where, line or 1)


def check_source(path: Path | str, source: bytes | None = None) -> list[str]:
    """Warn about the Airflow 2 context variables a DAG file names (in templates, context
    keys or callable arguments); return them. Cheap when there are none."""
    try:
        data = source if source is not None else Path(path).read_bytes()
    except OSError:
        return []
    _mentions[str(path)] = frozenset()
    if not _CONTEXT_WORDS.search(data.decode("utf-8", "replace")):
        return []
    found: dict[str, int] = {}
    try:
        tokens = list(tokenize.tokenize(io.BytesIO(data).readline))
    except (tokenize.TokenError, SyntaxError):
        return []
    for token in tokens:
        if token.type in (tokenize.NAME, tokenize.STRING) or "FSTRING" in tokenize.tok_name.get(
            token.type, ""
        ):
            for match in _CONTEXT_WORDS.finditer(token.string):
                found.setdefault(match.group(1), token.start[0])
    _mentions[str(path)] = frozenset(found)
    for name, line in found.items():
        deprecated(name, DEPRECATED_CONTEXT[name], fileloc=str(path), lineno=line)
    return list(found)


def file_mentions(fileloc: str | None) -> frozenset[str]:
    """The Airflow 2 context variables the DAG file names, as imported in this process."""
    return _mentions.get(str(fileloc), frozenset())


def names_in_module_of(function: Callable[..., Any]) -> frozenset[str]:
    """The Airflow 2 context variables the source file of `function` names (scanned once
    per process, with the warnings): what a `**context` callable may read."""
    import inspect

    try:
        path = inspect.getsourcefile(inspect.unwrap(function))
    except (TypeError, ValueError):
        return frozenset()
    if path is None:
        return frozenset()
    if path not in _mentions:
        check_source(path)
    return _mentions.get(path, frozenset())


PREV_SUCCESS = "prev_execution_date_success"


def lazy_values(keys: Iterable[str], context: Mapping[str, Any]) -> dict[str, Any]:
    """The Airflow 2 context variables among `keys`, computed from the context's dag,
    dag_run (and ti, for the query of prev_execution_date_success) when a task reads them:
    DAGs that never do pay nothing. Names that are not such variables are left out."""
    wanted = [key for key in keys if key in DEPRECATED_CONTEXT]
    dag, run, ti = context.get("dag"), context.get("dag_run"), context.get("ti")
    if not wanted or dag is None or run is None:
        return {}
    query = None
    if PREV_SUCCESS in wanted and ti is not None and hasattr(ti, "api"):
        query = partial(prev_success, ti.api, run)
    values = airflow2_dates(dag.timetable, run, query)
    return {key: values[key] for key in wanted if key in values}


def lazy_value(key: str, context: Mapping[str, Any]) -> Any:
    """One Airflow 2 context variable (see `lazy_values`), or KeyError."""
    return lazy_values([key], context)[key]


def prev_success(api: TaskAPI, run: Any) -> datetime | None:
    """The logical date of the DAG's latest successful run before `run` (one indexed query)."""
    return api.previous_logical_date(run.dag_id, run.logical_date, "success")


def warn_context_key(key: Any, context: Mapping[str, Any]) -> None:
    """Warn when a running task reads an Airflow 2 context variable."""
    if key in DEPRECATED_CONTEXT:
        fileloc = getattr(context.get("dag"), "fileloc", None) or "<unknown>"
        deprecated(str(key), DEPRECATED_CONTEXT[key], fileloc=fileloc)


class TaskContext(dict[str, Any]):
    """The task context: a dict that computes an Airflow 2 variable when it is read (with
    the warning)."""

    def __getitem__(self, key: Any) -> Any:
        warn_context_key(key, self)
        return super().__getitem__(key)

    def __missing__(self, key: Any) -> Any:
        self[key] = value = lazy_value(key, self)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        if key in DEPRECATED_CONTEXT and not super().__contains__(key):
            try:
                return self[key]
            except KeyError:
                return default
        warn_context_key(key, self)
        return super().get(key, default)


@functools.cache
def jinja_context_class() -> type:
    """A Jinja Context that warns when a template reads an Airflow 2 variable."""
    from jinja2.runtime import Context

    class _Context(Context):
        def resolve_or_missing(self, key: str) -> Any:
            if key in DEPRECATED_CONTEXT:
                warn_context_key(key, self.parent if "dag" in self.parent else self.vars)
                if key not in self.parent and key not in self.vars:
                    try:
                        return lazy_value(key, self.parent)
                    except KeyError:
                        pass
            return super().resolve_or_missing(key)

    return _Context


# -- the Airflow 2 date variables --------------------------------------------------------


@functools.cache
def _covers_every_hour(expression: str) -> bool:
    from croniter import croniter

    return croniter(expression).expanded[1] == ["*"]


def _cron_step(timetable: Any, current: datetime, forward: bool) -> datetime:
    """Airflow 2.x CronDataIntervalTimetable._get_next/_get_prev, DST handling included:
    schedules that do not run every hour keep their wall-clock time; those that do keep
    their distance in absolute time."""
    from croniter import croniter

    from engine.sdk.schedules import coerce_utc, localize

    tz = timetable.timezone
    local = coerce_utc(current).in_timezone(tz)
    naive = local.replace(tzinfo=None, fold=0)
    start = datetime(*naive.timetuple()[:6], naive.microsecond)
    cron = croniter(timetable.expression, start_time=start)
    scheduled = cron.get_next(datetime) if forward else cron.get_prev(datetime)
    if not _covers_every_hour(timetable.expression):
        return localize(scheduled, tz)
    return coerce_utc(local + (scheduled - start))


def previous_schedule(timetable: Timetable, when: datetime) -> datetime | None:
    """Airflow 2's `DAG.previous_schedule`: the schedule point before `when`, or None for
    `@once` and `schedule=None`."""
    from engine.sdk.schedules import CronTimetable, DeltaTimetable, coerce_utc

    if isinstance(timetable, CronTimetable):
        return _cron_step(timetable, when, forward=False)
    if isinstance(timetable, DeltaTimetable):
        return coerce_utc(coerce_utc(when) - timetable.delta)
    return None


def following_schedule(timetable: Timetable, when: datetime) -> datetime | None:
    """Airflow 2's `DAG.following_schedule`: the schedule point after `when`, or None for
    `@once` and `schedule=None`."""
    from engine.sdk.schedules import CronTimetable, DeltaTimetable, coerce_utc

    if isinstance(timetable, CronTimetable):
        return _cron_step(timetable, when, forward=True)
    if isinstance(timetable, DeltaTimetable):
        return coerce_utc(coerce_utc(when) + timetable.delta)
    return None


def _next_execution_date(timetable: Any, run: Any) -> datetime | None:
    """Airflow 2.x: the logical date of `dag.next_dagrun_info(run's data interval)`."""
    from engine.sdk.schedules import CronTimetable, DeltaTimetable, coerce_utc

    if not isinstance(timetable, CronTimetable | DeltaTimetable):
        return None
    start, end = run.data_interval_start, run.data_interval_end
    if start is None or end is None or coerce_utc(start) == coerce_utc(end):
        # an exact interval (a test run): the interval a scheduled run would have had
        return following_schedule(timetable, run.logical_date)
    end = coerce_utc(end)
    if isinstance(timetable, CronTimetable):
        previous = _cron_step(timetable, end, forward=False)
        return end if _cron_step(timetable, previous, forward=True) == end else previous
    return end


class Airflow2DateTime(pendulum.DateTime):
    """A pendulum DateTime that prints as pendulum 2 (Airflow 2) did."""

    def __str__(self) -> str:
        return self.isoformat()


def _airflow2_datetime(value: datetime | None) -> datetime | None:
    """`value` as Airflow 2's pendulum 2 DateTime: `str()` (and so `{{ execution_date }}`)
    gives ISO 8601 with a `T`, where pendulum 3 puts a space."""
    if value is None:
        return None
    v = value
    return Airflow2DateTime(
        v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, tzinfo=v.tzinfo
    )


def airflow2_dates(
    timetable: Timetable, run: Any, prev_success: Callable[[], datetime | None] | None = None
) -> dict[str, Any]:
    """The Airflow 2 date variables of a run, as Airflow 2.x's get_template_context."""
    from engine.sdk.schedules import coerce_utc

    logical = coerce_utc(run.logical_date)
    # Airflow 2: a run triggered by hand has no "next" or "previous" but itself (its
    # backfills and `dags test` runs are scheduled-like, so they get computed values)
    manual = run.run_type == "manual"
    if manual:
        following: datetime | None = logical
        previous: datetime | None = logical
    else:
        following = _next_execution_date(timetable, run)
        previous = previous_schedule(timetable, logical)

    def ds(value: datetime | None, fmt: str = "%Y-%m-%d") -> str | None:
        return value.strftime(fmt) if value is not None else None

    tomorrow, yesterday = logical + timedelta(days=1), logical - timedelta(days=1)
    values = {
        "execution_date": _airflow2_datetime(logical),
        "next_execution_date": _airflow2_datetime(following),
        "next_ds": ds(following),
        "next_ds_nodash": ds(following, "%Y%m%d"),
        "prev_execution_date": _airflow2_datetime(previous),
        "prev_ds": ds(previous),
        "prev_ds_nodash": ds(previous, "%Y%m%d"),
        "tomorrow_ds": ds(tomorrow),
        "tomorrow_ds_nodash": ds(tomorrow, "%Y%m%d"),
        "yesterday_ds": ds(yesterday),
        "yesterday_ds_nodash": ds(yesterday, "%Y%m%d"),
    }
    if prev_success is not None:  # a query: only when asked for
        values["prev_execution_date_success"] = _airflow2_datetime(prev_success())
    return values


# -- operators, hooks, decorators --------------------------------------------------------


class LoggingMixin:
    """`self.log`: a logger whose records go to the running task's log (as in Airflow)."""

    @property
    def log(self) -> logging.Logger:
        logger = self.__dict__.get("_log")
        if logger is None:
            cls = type(self)
            logger = logging.getLogger(f"engine.task.{cls.__module__}.{cls.__qualname__}")
            self.__dict__["_log"] = logger
        return logger

    @log.setter
    def log(self, value: logging.Logger) -> None:
        self.__dict__["_log"] = value


def apply_defaults(function: Callable[..., Any]) -> Callable[..., Any]:
    """Airflow 2's `apply_defaults`: a no-op here, as in Airflow 2 (defaults are applied to
    every operator constructor already)."""
    deprecated("apply_defaults", "nothing: remove the decorator")
    return function
