"""Configuration: defaults < `$DAGWATCH_HOME/dagwatch.toml` < `DAGWATCH__SECTION__KEY`.

Every option is declared once in `OPTIONS`; a key that is not declared, or a value that
does not parse, is a `ConfigError` naming the key, the value and what is allowed.
The environment is read only by `load_config`, called at the edge (CLI, task runner).
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.exceptions import ConfigError

ENV_PREFIX = "DAGWATCH__"
HOME_ENV = "DAGWATCH_HOME"
CONFIG_FILE_NAME = "dagwatch.toml"
MASK = "***"

Default = Callable[[Path], Any] | Any


@dataclass(frozen=True)
class Option:
    """One configuration key, its type, its default and what it is for."""

    section: str
    key: str
    type: str  # str | int | float | bool | path | choice | table
    default: Default
    help: str
    secret: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    def default_for(self, home: Path) -> Any:
        return self.default(home) if callable(self.default) else self.default

    def parse(self, raw: Any, source: str) -> Any:
        """Turn a raw value (TOML value or environment string) into the option's type."""
        try:
            value = _PARSERS[self.type](raw)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{self.name} = {raw!r} (from {source}) is not a valid {self.type}"
            ) from None
        if self.choices and value not in self.choices:
            allowed = ", ".join(self.choices)
            raise ConfigError(f"{self.name} = {raw!r} (from {source}): allowed values: {allowed}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(
                f"{self.name} = {raw!r} (from {source}) must be at least {self.minimum:g}"
            )
        return value


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


def _parse_int(raw: Any) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError(raw)
    return int(raw)


def _parse_float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError(raw)
    value = float(raw)
    if not math.isfinite(value):  # "nan" would pass every minimum check; "inf" never ends
        raise ValueError(raw)
    return value


def _parse_table(raw: Any) -> dict[str, Any]:
    """A TOML table, or (from the environment) the same as a JSON object."""
    if isinstance(raw, str):
        raw = json.loads(raw) if raw.strip() else {}
    if not isinstance(raw, dict):
        raise TypeError(raw)
    return raw


def _parse_str(raw: Any) -> str:
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise TypeError(raw)
    return str(raw)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "str": _parse_str,
    "choice": _parse_str,
    "path": lambda raw: Path(os.path.expanduser(_parse_str(raw))),
    "int": _parse_int,
    "float": _parse_float,
    "bool": _parse_bool,
    "table": _parse_table,
}

OPTIONS: tuple[Option, ...] = (
    Option(
        "core", "dags_folder", "path", lambda home: home / "dags", "Folder scanned for DAG files."
    ),
    Option(
        "core",
        "executor",
        "choice",
        "local",
        "Where task attempts run.",
        choices=("sequential", "local", "celery"),
    ),
    Option("core", "parallelism", "int", 32, "Task attempts running at once, all DAGs.", minimum=1),
    Option(
        "core",
        "worker_idle_timeout",
        "float",
        60.0,
        "Seconds an idle local-executor worker (and the DAG files it imported) waits for the "
        "next attempt before it exits and returns its memory.",
        minimum=0,
    ),
    Option(
        "core",
        "attempt_isolation",
        "choice",
        "worker",
        "How the local executor isolates attempts: 'worker' runs each in a long-lived worker "
        "process, replaced as soon as an attempt changed it; 'process' forks a fresh process "
        "from the worker for every attempt.",
        choices=("worker", "process"),
    ),
    Option(
        "core",
        "worker_max_attempts",
        "int",
        1000,
        "Attempts a local-executor worker runs (attempt_isolation = worker) before a fresh "
        "one replaces it; 0 for no limit.",
        minimum=0,
    ),
    Option("core", "load_examples", "bool", True, "Load the example DAGs shipped with dagwatch."),
    Option(
        "core",
        "dags_are_paused_at_creation",
        "bool",
        True,
        "New DAGs start paused unless the DAG sets is_paused_upon_creation.",
    ),
    Option(
        "core",
        "fernet_key",
        "str",
        "",
        "Fernet keys (comma-separated, first encrypts) for secrets in the metastore; "
        "empty: a key generated in $DAGWATCH_HOME/fernet.key.",
        secret=True,
    ),
    Option(
        "core",
        "dag_file_processor_timeout",
        "float",
        50.0,
        "Seconds a DAG file may take to import before it becomes an import error.",
        minimum=0.1,
    ),
    Option("core", "parsing_processes", "int", 2, "DAG files imported at once.", minimum=1),
    Option(
        "core", "default_pool_slots", "int", 128, "Slots of default_pool when created.", minimum=0
    ),
    Option("core", "max_active_runs_per_dag", "int", 16, "Default max_active_runs.", minimum=1),
    Option("core", "max_active_tasks_per_dag", "int", 16, "Default max_active_tasks.", minimum=1),
    Option(
        "core",
        "max_map_length",
        "int",
        1024,
        "Most task instances one mapped task may expand into; more fails the task.",
        minimum=1,
    ),
    Option("core", "default_timezone", "str", "UTC", "Timezone of naive dates in DAG files."),
    Option(
        "database",
        "sql_alchemy_conn",
        "str",
        lambda home: f"sqlite:///{home / 'dagwatch.db'}",
        "SQLAlchemy URL of the metastore (sqlite:/// or postgresql+psycopg://).",
        secret=True,
    ),
    Option(
        "scheduler", "loop_interval", "float", 1.0, "Seconds between scheduler ticks.", minimum=0
    ),
    Option(
        "scheduler",
        "heartbeat_timeout",
        "float",
        60.0,
        "Seconds without a heartbeat before an attempt is failed as a zombie.",
        minimum=1,
    ),
    Option(
        "scheduler",
        "min_file_process_interval",
        "float",
        30.0,
        "Seconds between two scans of the DAG folder.",
        minimum=0,
    ),
    Option("metrics", "statsd_on", "bool", False, "Send metrics to a StatsD server over UDP."),
    Option("metrics", "statsd_host", "str", "127.0.0.1", "StatsD server host."),
    Option("metrics", "statsd_port", "int", 8125, "StatsD server UDP port.", minimum=1),
    Option("metrics", "statsd_prefix", "str", "dagwatch", "Prefix of every StatsD name."),
    Option(
        "metrics",
        "statsd_tags",
        "choice",
        "none",
        "none: Airflow's dotted names with the labels inside; dogstatsd or influxdb: tags.",
        choices=("none", "dogstatsd", "influxdb"),
    ),
    Option(
        "metrics",
        "otel_on",
        "bool",
        False,
        "Export metrics over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, "
        "OTEL_METRIC_EXPORT_INTERVAL).",
    ),
    Option(
        "metrics", "prometheus_on", "bool", False, "Serve /metrics and /health from the scheduler."
    ),
    Option("metrics", "prometheus_host", "str", "127.0.0.1", "Address /metrics listens on."),
    Option(
        "metrics",
        "prometheus_port",
        "int",
        9112,
        "Port of /metrics and /health (0: any free port, logged at start).",
        minimum=0,
    ),
    Option(
        "metrics",
        "allow_list",
        "str",
        "",
        "Comma-separated metric name prefixes to keep (empty: all).",
    ),
    Option("metrics", "block_list", "str", "", "Comma-separated metric name prefixes to drop."),
    Option("alerts", "enabled", "bool", True, "Write and deliver alerts (routes and notifiers)."),
    Option(
        "alerts",
        "routes",
        "table",
        {},
        "Routes: [alerts.routes.NAME] tables of urls|conn_id|tag, events, dags, tags, owners,"
        " severity, rate_limit (env: a JSON object).",
        secret=True,
    ),
    Option(
        "alerts",
        "apprise_config",
        "str",
        "",
        "An Apprise configuration file (YAML or text) whose tags routes may name.",
    ),
    Option(
        "alerts",
        "fallback_urls",
        "str",
        "",
        "Apprise URLs (comma-separated) that receive alert_delivery_failed.",
        secret=True,
    ),
    Option(
        "alerts",
        "console_url",
        "str",
        "http://127.0.0.1:8501",
        "Base URL of the console, for the run links in alerts.",
    ),
    Option("alerts", "max_attempts", "int", 5, "Deliveries tried per alert.", minimum=1),
    Option(
        "alerts", "retry_delay", "float", 5.0, "Seconds before the first re-delivery.", minimum=0
    ),
    Option(
        "alerts",
        "max_retry_delay",
        "float",
        300.0,
        "Cap of the exponential delay between deliveries.",
        minimum=0,
    ),
    Option(
        "alerts",
        "delivery_timeout",
        "float",
        30.0,
        "Seconds one delivery may take before it counts as failed.",
        minimum=0.1,
    ),
    Option(
        "alerts",
        "group_window",
        "float",
        600.0,
        "Repeated alerts of one task and event within this many seconds go out as one.",
        minimum=0,
    ),
    Option(
        "alerts",
        "send_resolved",
        "bool",
        False,
        "Send task_resolved when a task whose failure was alerted later succeeds.",
    ),
    Option(
        "alerts",
        "miss_after_failure",
        "choice",
        "fold",
        "A deadline passed by a run that already failed: fold it into the failure alert, or"
        " page it too.",
        choices=("fold", "page"),
    ),
    Option(
        "alerts",
        "forecast_history",
        "int",
        10,
        "Successful attempts per task the deadline forecast learns from.",
        minimum=1,
    ),
    Option(
        "alerts",
        "forecast_quantile",
        "float",
        0.9,
        "Quantile of recent durations the forecast assumes each remaining task takes.",
        minimum=0.5,
    ),
    Option("console", "host", "str", "127.0.0.1", "Address the console listens on."),
    Option("console", "port", "int", 8501, "Port the console listens on.", minimum=1),
    Option(
        "console",
        "refresh_seconds",
        "float",
        5.0,
        "Seconds between the live parts of a console page refreshing themselves.",
        minimum=1,
    ),
    Option(
        "console",
        "auth",
        "choice",
        "none",
        "Who may use the console: none (loopback only), password (`dagwatch users`), oidc"
        " (st.login, configured in .streamlit/secrets.toml).",
        choices=("none", "password", "oidc"),
    ),
    Option("console", "grid_runs", "int", 25, "Runs the DAG grid shows per page.", minimum=1),
    Option("logging", "base_log_folder", "path", lambda home: home / "logs", "Task attempt logs."),
    Option(
        "logging",
        "level",
        "choice",
        "INFO",
        "Log level of dagwatch's own processes.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
)

_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
_SECTIONS = frozenset(option.section for option in OPTIONS)


@dataclass(frozen=True)
class Setting:
    """An option's effective value and where it came from."""

    option: Option
    value: Any
    source: str  # "default" | "file" | "env"

    def display_value(self) -> str:
        if self.option.secret and self.value not in ("", None, {}):
            if isinstance(self.value, dict):  # routes: their names, never their URLs
                return "{" + ", ".join(f"{name}: {MASK}" for name in self.value) + "}"
            if self.option.section == "database" and "://" in str(self.value):
                return _mask_url(str(self.value))  # the database stays recognisable
            return MASK
        return str(self.value)


def _mask_url(url: str) -> str:
    """Show a URL with its password masked, so the database is recognisable but not exposed."""
    scheme, _, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:{MASK}@{location}"


@dataclass(frozen=True)
class Config:
    """The effective configuration; read-only once loaded."""

    home: Path
    settings: Mapping[str, Setting] = field(repr=False)

    def get(self, name: str) -> Any:
        """The value of `section.key`."""
        try:
            return self.settings[name].value
        except KeyError:
            raise ConfigError(f"unknown configuration key {name!r}") from None

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    @property
    def file(self) -> Path:
        return self.home / CONFIG_FILE_NAME

    def with_overrides(self, **values: Any) -> Config:
        """A copy with some keys replaced, given as `section__key=value` (tests, CLI flags)."""
        settings = dict(self.settings)
        for dunder, raw in values.items():
            name = dunder.replace("__", ".", 1)
            option = _option(name, "override")
            settings[name] = Setting(option, option.parse(raw, "override"), "override")
        return Config(self.home, settings)


def _option(name: str, source: str) -> Option:
    option = _BY_NAME.get(name)
    if option is None:
        section = name.split(".", 1)[0]
        known = sorted(k for k in _BY_NAME if k.startswith(f"{section}."))
        hint = f"; keys of [{section}]: {', '.join(known)}" if known else ""
        raise ConfigError(f"unknown configuration key {name!r} (from {source}){hint}")
    return option


def home_from(environ: Mapping[str, str]) -> Path:
    """$DAGWATCH_HOME, or ~/dagwatch."""
    raw = environ.get(HOME_ENV) or "~/dagwatch"
    return Path(os.path.expanduser(raw)).absolute()


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section!r} must be a [section], not a bare key")
        if section not in _SECTIONS:
            allowed = ", ".join(sorted(_SECTIONS))
            raise ConfigError(f"{path}: unknown section [{section}]; allowed: {allowed}")
        for key, raw in table.items():
            values[f"{section}.{key}"] = raw
    return values


def _read_env(environ: Mapping[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for variable, raw in environ.items():
        if not variable.startswith(ENV_PREFIX):
            continue
        section, sep, key = variable[len(ENV_PREFIX) :].partition("__")
        if not sep:
            raise ConfigError(f"{variable}: expected {ENV_PREFIX}<SECTION>__<KEY>")
        values[f"{section.lower()}.{key.lower()}"] = raw
    return values


def load_config(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Config:
    """Read defaults, the TOML file and the environment, in that order of precedence."""
    environ = os.environ if environ is None else environ
    home = home or home_from(environ)
    from_file = _read_file(home / CONFIG_FILE_NAME)
    from_env = _read_env(environ)
    for name in from_file:
        _option(name, str(home / CONFIG_FILE_NAME))
    for name in from_env:
        _option(name, f"{ENV_PREFIX}{name.replace('.', '__').upper()}")
    settings: dict[str, Setting] = {}
    for option in OPTIONS:
        env_name = f"{ENV_PREFIX}{option.section.upper()}__{option.key.upper()}"
        if option.name in from_env:
            setting = Setting(option, option.parse(from_env[option.name], env_name), "env")
        elif option.name in from_file:
            setting = Setting(
                option, option.parse(from_file[option.name], CONFIG_FILE_NAME), "file"
            )
        else:
            setting = Setting(option, option.default_for(home), "default")
        settings[option.name] = setting
    return Config(home, settings)
