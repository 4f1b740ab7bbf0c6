"""Jinja rendering of operators' template fields, and the date part of the task context.

Formats match Airflow's so templates carry over unchanged. Undefined names are errors
(StrictUndefined, as in Airflow), and every rendering failure becomes a TemplateError
naming the task and the field. jinja2 is imported on first use.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from engine.exceptions import SkipTask, TemplateError
from engine.sdk.compat import jinja_context_class
from engine.sdk.params import DagParam
from engine.sdk.schedules import coerce_utc
from engine.sdk.tasks import MappedArgument, XComArg

if TYPE_CHECKING:
    from jinja2 import Environment


def ds_add(ds: str, days: int) -> str:
    """`ds` shifted by `days` days: ds_add("2024-01-30", 3) == "2024-02-02"."""
    if not days:
        return str(ds)
    shifted = datetime.strptime(str(ds), "%Y-%m-%d") + timedelta(days=days)
    return shifted.strftime("%Y-%m-%d")


def ds_format(ds: str, input_format: str, output_format: str) -> str:
    """Reformat a date string: ds_format("2024-01-30", "%Y-%m-%d", "%d/%m/%y")."""
    return datetime.strptime(str(ds), input_format).strftime(output_format)


#: The `macros` object of the template context (Airflow's names and members).
macros = SimpleNamespace(
    ds_add=ds_add,
    ds_format=ds_format,
    datetime=datetime,
    timedelta=timedelta,
    time=time,
    uuid=uuid,
    random=random.random,
    json=json,
)


def _ds(value: datetime) -> str:
    return value.strftime("%Y-%m-%d")


def _ts_nodash_with_tz(value: datetime) -> str:
    return value.isoformat().replace("-", "").replace(":", "")


#: Jinja filters: {{ logical_date | ds }} etc.
FILTERS = {
    "ds": _ds,
    "ds_nodash": lambda value: value.strftime("%Y%m%d"),
    "ts": lambda value: value.isoformat(),
    "ts_nodash": lambda value: value.strftime("%Y%m%dT%H%M%S"),
    "ts_nodash_with_tz": _ts_nodash_with_tz,
}


def date_context(
    logical_date: datetime,
    data_interval_start: datetime | None = None,
    data_interval_end: datetime | None = None,
) -> dict[str, Any]:
    """ds, ts and friends for a run, formatted exactly as Airflow does (in UTC)."""
    logical = coerce_utc(logical_date)
    ds = _ds(logical)
    ts = logical.isoformat()
    return {
        "ds": ds,
        "ds_nodash": ds.replace("-", ""),
        "ts": ts,
        "ts_nodash": logical.strftime("%Y%m%dT%H%M%S"),
        "ts_nodash_with_tz": ts.replace("-", "").replace(":", ""),
        "logical_date": logical,
        "data_interval_start": coerce_utc(data_interval_start or logical),
        "data_interval_end": coerce_utc(data_interval_end or logical),
        "macros": macros,
    }


def make_jinja_env(dag: Any = None) -> Environment:
    """The Jinja environment for a DAG's templates.

    Template files are looked up next to the DAG file, then in `template_searchpath`.
    With `render_template_as_native_obj` templates render to Python objects. The DAG's
    `user_defined_macros` become Jinja globals and its `user_defined_filters` filters, as
    in Airflow: a context variable of the same name (ds, params...) wins over a macro.
    """
    import jinja2

    searchpath: list[str] = []
    if dag is not None:
        if getattr(dag, "fileloc", None):
            searchpath.append(os.path.dirname(os.path.abspath(dag.fileloc)))
        searchpath.extend(getattr(dag, "template_searchpath", None) or [])
    options: dict[str, Any] = {
        "loader": jinja2.FileSystemLoader(searchpath),
        "undefined": jinja2.StrictUndefined,
        "autoescape": False,
        "keep_trailing_newline": True,
        "extensions": ["jinja2.ext.do", "jinja2.ext.loopcontrols"],
    }
    if dag is not None and getattr(dag, "render_template_as_native_obj", False):
        from jinja2.nativetypes import NativeEnvironment

        env: jinja2.Environment = NativeEnvironment(**options)
    else:
        env = jinja2.Environment(**options)
    env.context_class = jinja_context_class()  # warns on Airflow 2 variables
    env.filters.update(FILTERS)
    if dag is not None:
        env.globals.update(getattr(dag, "user_defined_macros", None) or {})
        env.filters.update(getattr(dag, "user_defined_filters", None) or {})
    return env


def render_value(
    value: Any,
    context: Mapping[str, Any],
    env: Environment,
    template_ext: tuple[str, ...] = (),
    _seen: set[int] | None = None,
) -> Any:
    """Render strings (or named template files); recurse into containers.

    XComArgs and DAG param placeholders resolve to their run-time values, which are not
    rendered again. Objects with their own `template_fields` are rendered in place.
    """
    seen = _seen if _seen is not None else set()
    if isinstance(value, str):
        if template_ext and value.endswith(template_ext):
            template = env.get_template(value)
        else:
            template = env.from_string(value)
        return template.render(context)
    if isinstance(value, XComArg | DagParam | MappedArgument):
        return value.resolve(context)
    if isinstance(value, tuple):
        items = [render_value(item, context, env, template_ext, seen) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [render_value(item, context, env, template_ext, seen) for item in value]
    if isinstance(value, dict):
        return {k: render_value(v, context, env, template_ext, seen) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return type(value)(render_value(item, context, env, template_ext, seen) for item in value)
    nested = getattr(value, "template_fields", None)
    if nested and not isinstance(value, type) and id(value) not in seen:
        seen.add(id(value))
        for name in nested:
            inner = getattr(value, name, None)
            setattr(value, name, render_value(inner, context, env, template_ext, seen))
    return value


def _describe(exc: BaseException) -> str:
    lineno = getattr(exc, "lineno", None)
    message = getattr(exc, "message", None) or str(exc)
    where = f" (line {lineno})" if lineno else ""
    kind = type(exc).__name__
    return f"{kind}: {message}{where}"


def render_template_fields(
    operator: Any, context: Mapping[str, Any], jinja_env: Environment | None = None
) -> None:
    """Render each of `operator.template_fields` in place, or raise TemplateError."""
    env = jinja_env if jinja_env is not None else make_jinja_env(getattr(operator, "dag", None))
    template_ext = tuple(getattr(operator, "template_ext", ()) or ())
    task_id = getattr(operator, "task_id", "?")
    for name in operator.template_fields:
        if not hasattr(operator, name):
            raise TemplateError(
                f"task {task_id!r}: template field {name!r} is not an attribute of "
                f"{type(operator).__name__}"
            )
        value = getattr(operator, name)
        if value is None:
            continue
        try:
            rendered = render_value(value, context, env, template_ext)
        except (SkipTask, TemplateError):
            raise
        except Exception as exc:
            raise TemplateError(
                f"task {task_id!r}: could not render field {name!r}: {_describe(exc)}"
            ) from exc
        setattr(operator, name, rendered)
