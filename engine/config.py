"""Configuration: defaults < `$DAGWATCH_HOME/dagwatch.toml` < `DAGWATCH__SECTION__KEY`.

Every option is declared once in `OPTIONS` with its type and what values it allows (a
range, a set of choices, a check). `load_config` validates every value as it reads it: a
key that is not declared, or a value that is not allowed, is a `ConfigError` naming the
key, the value, where it came from and what is allowed (the CLI prints it as one line and
exits 2). The environment is read only by `load_config`, called at the edge (CLI, task
runner).
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
#: sections whose secret values are URLs: shown with the password masked, host kept
URL_SECTIONS = ("database", "celery")

Default = Callable[[Path], Any] | Any
Choices = tuple[str, ...] | Callable[[], tuple[str, ...]]

#: The largest whole number an option may take: what an INTEGER column of the metastore
#: holds (a pool's slots), and far beyond any sensible count.
INT_MAX = 2**31 - 1
#: The largest number of seconds an option may take (365 days): sleeps and waits of the
#: standard library overflow far above it, and no interval or timeout needs more.
SECONDS_MAX = 365 * 86400


@dataclass(frozen=True)
class Option:
    """One configuration key, its type, its default, what it allows and what it is for."""

    section: str
    key: str
    type: str  # str | int | float | duration | bool | path | choice | table
    default: Default
    help: str
    secret: bool = False
    choices: Choices = ()  # or a callable, for sets that grow (the executors)
    minimum: float | None = None
    maximum: float | None = None  # default for int and float: INT_MAX, SECONDS_MAX
    check: Callable[[Any], bool] | None = None  # a further test of the parsed value
    allowed: str = ""  # what is allowed, when the type and range do not say it
    note: str = ""  # added to what is allowed, e.g. the meaning of 0

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    def default_for(self, home: Path) -> Any:
        return self.default(home) if callable(self.default) else self.default

    def choice_list(self) -> tuple[str, ...]:
        """The allowed values of a choice option, as they are today."""
        return self.choices() if callable(self.choices) else self.choices

    def bounds(self) -> tuple[float | None, float | None]:
        """The (minimum, maximum) of a number option; numbers always have a maximum."""
        if self.type not in ("int", "float", "duration"):
            return self.minimum, self.maximum
        ceiling = INT_MAX if self.type == "int" else SECONDS_MAX
        return self.minimum, ceiling if self.maximum is None else self.maximum

    def describe_allowed(self) -> str:
        """What values the option allows, as the end of "must be ..."."""
        text = self.allowed or self._allowed_by_type()
        return f"{text} ({self.note})" if self.note else text

    def _allowed_by_type(self) -> str:
        low, high = self.bounds()
        span = (
            ""
            if low is None or high is None
            else f" from {format_number(low)} to {format_number(high)}"
        )
        if self.type in ("int", "float"):
            return ("an integer" if self.type == "int" else "a number") + span
        if self.type == "duration":
            return f'seconds{span}, or a number with a unit ("90m", "24h", "7d")'
        if self.type == "choice":
            return "one of " + ", ".join(self.choice_list())
        return {
            "bool": "true or false",
            "path": "a path (not empty)",
            "table": "a table (from the environment: a JSON object)",
        }.get(self.type, "a string")

    def refuse(self, raw: Any, source: str) -> ConfigError:
        """The error for a value that is not allowed: key, value, source, what is allowed."""
        return ConfigError(
            f"{self.name} = {self.shown(raw)} (from {source}): must be {self.describe_allowed()}"
        )

    def shown(self, raw: Any) -> str:
        """The raw value as an error message may show it: a secret never appears."""
        if not self.secret:
            return repr(raw)
        if self.section in URL_SECTIONS and isinstance(raw, str) and "://" in raw:
            return repr(_mask_url(raw))
        return MASK

    def parse(self, raw: Any, source: str) -> Any:
        """Turn a raw value (TOML value or environment string) into the option's type, or
        refuse it naming the key, the value, where it came from and what is allowed."""
        try:
            value = _PARSERS[self.type](raw)
        except (TypeError, ValueError, OverflowError):
            raise self.refuse(raw, source) from None
        if self.type == "choice":
            value = _canonical_choice(value, self.choice_list())
        if not self._allows(value):
            raise self.refuse(raw, source)
        return value

    def _allows(self, value: Any) -> bool:
        low, high = self.bounds()
        if value is None or (low is not None and value < low):
            return False
        if high is not None and value > high:
            return False
        return self.check is None or self.check(value)


def format_number(number: float) -> str:
    """A bound as people write it: 31536000, 0.5, never 3.1536e+07."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _canonical_choice(value: str, choices: tuple[str, ...]) -> str | None:
    """The choice `value` names, in any letter case (`info` is `INFO`); None if none."""
    for choice in choices:
        if value.strip().lower() == choice.lower():
            return choice
    return None


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


def _parse_path(raw: Any) -> Path:
    text = _parse_str(raw).strip()
    if not text:  # Path("") is the current directory: never what was meant
        raise ValueError(raw)
    return Path(os.path.expanduser(text))


def _executor_names() -> tuple[str, ...]:
    """The executors this version has: a new executor registers there, and is allowed."""
    from engine.execution import EXECUTORS

    return tuple(EXECUTORS)


def _is_broker_url(url: str) -> bool:
    return url.split("://", 1)[0] in ("redis", "rediss", "amqp", "amqps", "pyamqp")


def _is_result_backend_url(url: str) -> bool:
    scheme = url.split("://", 1)[0]
    return scheme in ("redis", "rediss") or (scheme.startswith("db+") and "://" in url)


def _is_timezone(name: str) -> bool:
    import zoneinfo  # only when a timezone is checked

    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return False
    return True


def _secrets_backends_known(raw: str) -> bool:
    """Every name of `secrets.backends` is built in or registered (entry points are read
    only when a name is not built in)."""
    from engine.secrets_backends import check_names

    return check_names(raw)


def _is_metastore_url(url: str) -> bool:
    scheme, sep, rest = url.strip().partition("://")
    backend = scheme.split("+", 1)[0]
    if backend == "sqlite":
        return bool(sep)  # sqlite:// alone is an in-memory database
    return bool(sep and rest) and backend in ("postgresql", "postgres")


def _is_http_url(url: str) -> bool:
    scheme, sep, rest = url.strip().partition("://")
    return bool(sep and rest.strip("/")) and scheme in ("http", "https")


#: The fields alert grouping may use (`alerts.group_by`, a route's `group_by`).
GROUP_FIELDS = ("dag_id", "run_id", "task_id", "event")


def _group_fields_ok(text: str) -> bool:
    fields = [part.strip() for part in text.split(",") if part.strip()]
    return all(field in GROUP_FIELDS for field in fields)


def _not_a_file(path: Path) -> bool:
    return not path.exists() or path.is_dir()


def _not_blank(text: str) -> bool:
    return bool(text.strip())


#: Units of a duration written as text ("90s", "15m", "24h", "7d").
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _parse_duration(raw: Any) -> float:
    """Seconds, from a number of seconds or a number with a unit: "90s", "15m", "24h", "7d"."""
    if isinstance(raw, str):
        text = raw.strip().lower()
        unit = _DURATION_UNITS.get(text[-1:])
        if unit is not None:
            return _parse_float(text[:-1]) * unit
    return _parse_float(raw)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "str": _parse_str,
    "choice": _parse_str,
    "path": _parse_path,
    "int": _parse_int,
    "float": _parse_float,
    "duration": _parse_duration,
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
        choices=_executor_names,
        note="the executors of this version",
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
        note="0: no limit",
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
    Option(
        "core",
        "default_timezone",
        "str",
        "UTC",
        "Timezone of naive start and end dates in DAG files, and of the schedule of a DAG "
        "whose start date has no timezone.",
        check=_is_timezone,
        allowed="an IANA timezone name, like UTC or Europe/Amsterdam",
    ),
    Option(
        "database",
        "sql_alchemy_conn",
        "str",
        lambda home: f"sqlite:///{home / 'dagwatch.db'}",
        "SQLAlchemy URL of the metastore (sqlite:/// or postgresql+psycopg://).",
        secret=True,
        check=_is_metastore_url,
        allowed="a sqlite:///path or postgresql+psycopg://user@host/db URL",
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
        "scheduler_health_check_threshold",
        "float",
        30.0,
        "Seconds without a scheduler job heartbeat (sent every 5 s) before the other "
        "schedulers consider it dead and adopt the task instances it queued.",
        minimum=10,
    ),
    Option(
        "scheduler",
        "min_file_process_interval",
        "float",
        30.0,
        "Seconds between two scans of the DAG folder.",
        minimum=0,
    ),
    Option(
        "celery",
        "broker_url",
        "str",
        "redis://127.0.0.1:6379/0",
        "Broker the celery executor sends attempts through (Redis or RabbitMQ).",
        secret=True,
        check=_is_broker_url,
        allowed="a redis://, rediss://, amqp:// or amqps:// URL",
    ),
    Option(
        "celery",
        "result_backend",
        "str",
        "redis://127.0.0.1:6379/1",
        "Where workers leave each attempt's result (its metrics, relayed to the scheduler's "
        "backends): a Redis URL or db+postgresql://.",
        secret=True,
        check=_is_result_backend_url,
        allowed="a redis://, rediss://, db+postgresql:// or db+sqlite:// URL",
    ),
    Option(
        "celery",
        "default_queue",
        "str",
        "default",
        "Celery queue of tasks whose queue= is not set (and of DAG callbacks).",
        check=bool,
        allowed="a queue name (not empty)",
    ),
    Option(
        "celery",
        "requeue_timeout",
        "float",
        300.0,
        "Seconds an attempt may stay queued (sent, not started) before its message is sent "
        "again under a new id; the old message is then refused by any worker.",
        minimum=1,
    ),
    Option(
        "celery",
        "visibility_timeout",
        "float",
        3600.0,
        "Redis broker: seconds before a message a worker took but did not acknowledge (a "
        "worker that died) is delivered to another worker.",
        minimum=1,
    ),
    Option(
        "celery",
        "worker_concurrency",
        "int",
        4,
        "Attempts one `dagwatch worker` runs at once (--concurrency overrides it).",
        minimum=1,
    ),
    Option("metrics", "statsd_on", "bool", False, "Send metrics to a StatsD server over UDP."),
    Option(
        "metrics",
        "statsd_host",
        "str",
        "127.0.0.1",
        "StatsD server host.",
        check=_not_blank,
        allowed="a host name or address",
    ),
    Option(
        "metrics", "statsd_port", "int", 8125, "StatsD server UDP port.", minimum=1, maximum=65535
    ),
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
    Option(
        "metrics",
        "prometheus_host",
        "str",
        "127.0.0.1",
        "Address /metrics listens on (0.0.0.0: every interface).",
        check=_not_blank,
        allowed="a host name or address",
    ),
    Option(
        "metrics",
        "prometheus_port",
        "int",
        9112,
        "Port of /metrics and /health (0: any free port, logged at start).",
        minimum=0,
        maximum=65535,
        note="0: any free port",
    ),
    Option(
        "metrics",
        "allow_list",
        "str",
        "",
        "Comma-separated metric name prefixes to keep (empty: all).",
    ),
    Option("metrics", "block_list", "str", "", "Comma-separated metric name prefixes to drop."),
    Option(
        "secrets",
        "backends",
        "str",
        "env",
        "Where Variables and Connections are looked up, in order, before the metastore: env, "
        "local_filesystem, or a backend registered under the dagwatch.secrets entry point.",
        check=_secrets_backends_known,
        allowed="a comma-separated list, each name once, of env, local_filesystem and the "
        "backends installed packages register under the dagwatch.secrets entry point",
    ),
    Option(
        "secrets",
        "variables_file_path",
        "str",
        "",
        "The local_filesystem backend's variables file (.json, .yaml or .env).",
    ),
    Option(
        "secrets",
        "connections_file_path",
        "str",
        "",
        "The local_filesystem backend's connections file (.json, .yaml or .env).",
    ),
    Option(
        "secrets",
        "backend_kwargs",
        "table",
        {},
        "[secrets.backend_kwargs.NAME] tables: the keyword arguments the backend NAME is "
        "created with (env: a JSON object of objects).",
        secret=True,
    ),
    Option("alerts", "enabled", "bool", True, "Write and deliver alerts (routes and notifiers)."),
    Option(
        "alerts",
        "routes",
        "table",
        {},
        "Routes: [alerts.routes.NAME] tables of urls|conn_id|tag, events, dags, tags, owners,"
        " severity, rate_limit, title, body, group_by, group_wait, group_interval,"
        " send_resolved (env: a JSON object).",
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
        check=_is_http_url,
        allowed="an http:// or https:// URL",
    ),
    Option(
        "alerts",
        "max_attempts",
        "int",
        5,
        "Failed deliveries of an alert after which alert_delivery_failed is raised (once);"
        " delivery goes on until alerts.max_age.",
        minimum=1,
    ),
    Option(
        "alerts",
        "max_age",
        "duration",
        86400.0,
        "How long an undelivered alert is retried before it is marked failed: seconds, or a"
        ' number with a unit ("90m", "24h", "7d").',
        minimum=1,
    ),
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
        "Seconds one delivery may take; past it the attempt is recorded as a timeout (the"
        " channel may have the message: outcome unknown) and retried.",
        minimum=0.1,
    ),
    Option(
        "alerts",
        "delivery_concurrency",
        "int",
        8,
        "Deliveries in flight at once (worker threads); each channel has one at a time.",
        minimum=1,
    ),
    Option(
        "alerts",
        "group_window",
        "float",
        600.0,
        "On routes with group_by = []: repeated alerts of one task and event within this many"
        " seconds go out as one.",
        minimum=0,
    ),
    Option(
        "alerts",
        "send_resolved",
        "bool",
        False,
        "Routes page when an incident's work succeeds again (incident_resolved; task_resolved"
        " on routes with group_by = []); a route's send_resolved overrides it.",
    ),
    Option(
        "alerts",
        "group_by",
        "str",
        "dag_id,run_id",
        "Fields whose values make one incident (comma-separated: dag_id, run_id, task_id,"
        " event; empty: one message per alert); a route's group_by overrides it.",
        check=_group_fields_ok,
        allowed="comma-separated fields among dag_id, run_id, task_id, event (or empty)",
    ),
    Option(
        "alerts",
        "group_wait",
        "float",
        5.0,
        "Seconds an incident's first page waits for more alerts of it (a storm is one page).",
        minimum=0,
    ),
    Option(
        "alerts",
        "group_interval",
        "float",
        60.0,
        "Seconds between two pages of one incident: later changes are batched this often.",
        minimum=0,
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
        "run_start_grace",
        "duration",
        300.0,
        "A scheduled run not created, or a run still queued, this long after it was due raises"
        ' run_not_started (once per run): seconds, or "10m", "1h".',
        minimum=1,
    ),
    Option(
        "alerts",
        "forecast_quantile",
        "float",
        0.9,
        "Quantile of recent durations the forecast assumes each remaining task takes.",
        minimum=0.5,
        maximum=1,
    ),
    Option(
        "logging",
        "base_log_folder",
        "path",
        lambda home: home / "logs",
        "Task attempt logs (created when missing).",
        check=_not_a_file,
        allowed="a folder path (not empty, not a file)",
    ),
    Option(
        "console",
        "host",
        "str",
        "127.0.0.1",
        "Address the console listens on (anything but loopback needs console.auth).",
        check=_not_blank,
        allowed="a host name or address",
    ),
    Option(
        "console", "port", "int", 8501, "Port the console listens on.", minimum=1, maximum=65535
    ),
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
    Option(
        "console",
        "capacity_retention",
        "duration",
        8 * 86400.0,
        "How long the per-minute capacity rollup (the Pools and capacity page's 24 h and 7 d"
        ' windows) is kept: seconds, or "8d", "36h"; at least a day.',
        minimum=86400,
    ),
    Option(
        "console",
        "session_hours",
        "float",
        12.0,
        "Hours a password login lasts (a signed cookie: it survives reloads and new tabs; "
        "logging out, deleting the user or changing the password ends it sooner).",
        minimum=0.05,
        maximum=24 * 30,
    ),
    Option(
        "console",
        "session_secret",
        "str",
        "",
        "Key that signs console login cookies (at least 32 characters); empty: a key "
        "generated in $DAGWATCH_HOME/console_session.key. Changing it logs everyone out.",
        secret=True,
        check=lambda value: value == "" or len(value) >= 32,
        allowed="empty, or a string of at least 32 characters",
    ),
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
            if self.option.section in URL_SECTIONS and "://" in str(self.value):
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

    def origin(self, name: str) -> str:
        """Where the value of `name` came from, as an error message names it."""
        source = self.settings[name].source
        if source == "env":
            return env_variable(name)
        if source == "file":
            return str(self.file)
        return source

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


def env_variable(name: str) -> str:
    """The environment variable that sets `section.key`."""
    return f"{ENV_PREFIX}{name.replace('.', '__').upper()}"


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:  # a folder, unreadable, not UTF-8
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"{path}: cannot be read as a TOML file: {reason}") from None
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
    if home.exists() and not home.is_dir():
        raise ConfigError(f"{HOME_ENV} = {str(home)!r}: must be a folder, not a file")
    file = str(home / CONFIG_FILE_NAME)
    from_file = _read_file(home / CONFIG_FILE_NAME)
    from_env = _read_env(environ)
    for name in from_file:
        _option(name, file)
    for name in from_env:
        _option(name, env_variable(name))
    settings: dict[str, Setting] = {}
    for option in OPTIONS:  # every value is validated here, before any command uses one
        setting = Setting(option, option.default_for(home), "default")
        if option.name in from_file:  # checked even when the environment overrides it
            setting = Setting(option, option.parse(from_file[option.name], file), "file")
        if option.name in from_env:
            raw = from_env[option.name]
            setting = Setting(option, option.parse(raw, env_variable(option.name)), "env")
        settings[option.name] = setting
    return Config(home, settings)


def checked_dags_folder(config: Config) -> Path:
    """`core.dags_folder`, ready to scan: the default folder is created when missing; a
    configured one must be an existing, readable folder, or this is a `ConfigError`."""
    setting = config.settings["core.dags_folder"]
    folder = Path(setting.value)
    where = f"core.dags_folder = {str(folder)!r} (from {config.origin('core.dags_folder')})"
    if setting.source == "default" and not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{where} cannot be created: {exc.strerror or exc}") from None
    if not folder.exists():
        problem = "does not exist"
    elif not folder.is_dir():
        problem = "is a file"
    elif not os.access(folder, os.R_OK | os.X_OK):
        problem = "cannot be read"
    else:
        return folder
    raise ConfigError(f"{where} {problem}; it must be an existing folder of DAG files")
