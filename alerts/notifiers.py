"""Apprise delivery, alert messages, and `AppriseNotifier`, the notification callback.

Where a target's URLs come from, resolved at delivery time (never stored in clear):

- inline URLs: as written (an `AppriseNotifier` stores them encrypted with the Fernet key);
- `env:VAR`: the environment variable VAR holds one or more Apprise URLs; a missing
  variable is an error naming it;
- `conn_id`: a Connection (`DAGWATCH_CONN_<ID>` or the metastore), read in this order:
  1. `extra` `{"urls": [...]}` (a list, or one comma-separated string);
  2. `conn_type` `apprise`: the password holds the URL(s), so the secret is the encrypted,
     masked field: `dagwatch connections add pager --conn-type apprise --conn-password
     'pagerduty://KEY@ROUTING'`;
  3. otherwise the connection *is* the Apprise URL, its type being the scheme:
     `DAGWATCH_CONN_HOOK='json://user:token@hooks.example.com/alerts'`;
- `tag`: the entries of the Apprise configuration file `alerts.apprise_config` with that tag.

Every resolved URL (and its password, token-like path and authority) is registered with
`engine.secrets.mask_secret`, and Apprise's own logger redacts them. Apprise itself is
imported only when something is delivered: workers import this module with every DAG file.
Sending is `alerts.delivery`'s.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from alerts import outbox
from alerts.events import DEFAULT_SEVERITY, NOTIFY_TYPE, Event, fingerprint, group_key
from alerts.targets import ENV_PREFIX, Target
from engine import secrets
from engine.exceptions import DagwatchError

if TYPE_CHECKING:
    import apprise
    from jinja2.sandbox import SandboxedEnvironment

    from engine.config import Config

log = logging.getLogger(__name__)

#: The route name of rows written by an `AppriseNotifier` (they carry their own target).
NOTIFIER_ROUTE = "notifier"
NOTIFY_TYPES = ("info", "success", "warning", "failure")
#: URL parts at least this long that do not look like a host name are masked as tokens.
_TOKEN_LEN = 8
#: Loggers whose records may hold a URL being delivered to (urllib3 logs request paths).
_LOGGERS_SEEING_URLS = ("apprise", "urllib3.connectionpool")
_SUCCESS_EVENTS = frozenset({"task_succeeded", "task_resolved", "dag_run_succeeded"})


class NotifierError(DagwatchError):
    """The notification target cannot be used."""


# -- targets -------------------------------------------------------------------------------


def mask_url(url: str) -> None:
    """Register an Apprise URL and its secret-looking parts with the secrets masker."""
    secrets.mask_secret(url)
    try:
        parts = urlsplit(url)
        password, username = parts.password, parts.username
    except ValueError:  # not a URL urllib understands: the whole string is masked already
        return
    for value in (password, password and unquote(password)):
        secrets.mask_secret(value)
    for value in (username, parts.path):
        if value and len(value) >= _TOKEN_LEN:
            secrets.mask_secret(value)
    for segment in unquote(parts.path).split("/"):  # slack://TokenA/TokenB/TokenC
        if _looks_like_token(segment):
            secrets.mask_secret(segment)
    host = parts.netloc.rsplit("@", 1)[-1]
    if len(host) >= _TOKEN_LEN and "." not in host and not host.startswith("localhost"):
        secrets.mask_secret(parts.netloc)  # a key in the host's place (tgram://, discord://)
        secrets.mask_secret(host)
    for item in parts.query.split("&"):
        key, _, value = item.partition("=")
        if value and (secrets.is_sensitive_key(key) or len(value) >= 3 * _TOKEN_LEN):
            secrets.mask_secret(value)
            secrets.mask_secret(unquote(value))


def _looks_like_token(text: str) -> bool:
    """A URL part that is a key, not a word: long, with digits or mixed case."""
    if len(text) < _TOKEN_LEN:
        return False
    return any(c.isdigit() for c in text) or (text.lower() != text and text.upper() != text)


def learn_route_secrets(routes: Iterable[Any], environ: Mapping[str, str] | None = None) -> None:
    """Mask the URLs routes name inline or through `env:VAR` (known without a delivery);
    a connection's or a config tag's URLs are masked when they are read, before use."""
    environ = os.environ if environ is None else environ
    for route in routes:
        for url in route.target.urls:
            if url.startswith(ENV_PREFIX):
                url = environ.get(url[len(ENV_PREFIX) :], "")
            mask_urls(url)


def mask_urls(text: str) -> None:
    """`mask_url` for each URL of a text holding one or more (Apprise's separators)."""
    parts = [part for part in re.split(r"[\s,]+", text.strip()) if part]
    for url in parts if len(parts) > 1 else [text.strip()]:
        mask_url(url)


def connection_urls(connection: Any) -> list[str]:
    """The Apprise URLs of a Connection (see the module docstring for the convention)."""
    urls = (connection.extra or {}).get("urls")
    if urls:
        if isinstance(urls, str):
            urls = [part.strip() for part in urls.split(",")]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise NotifierError(
                f"connection {connection.conn_id!r}: extra.urls must be a list of Apprise URLs"
            )
        return [url for url in urls if url]
    if (connection.conn_type or "").lower() == "apprise":
        if not connection.password:
            raise NotifierError(
                f"connection {connection.conn_id!r} (type apprise) has no URL in its password"
            )
        return [part.strip() for part in connection.password.split(",") if part.strip()]
    if not connection.conn_type or not connection.host:
        raise NotifierError(
            f"connection {connection.conn_id!r} holds no Apprise URL: set extra "
            '{"urls": [...]}, or type apprise with the URL as password, or the URL itself'
        )
    return [_url_of_fields(connection)]


def _url_of_fields(connection: Any) -> str:
    """Rebuild `scheme://login:password@host:port/path?extra` from a connection's fields."""
    auth = ""
    if connection.login:
        auth = quote(connection.login, safe="")
    if connection.password:
        auth += ":" + quote(connection.password, safe="")
    url = f"{connection.conn_type}://{auth + '@' if auth else ''}{connection.host}"
    if connection.port:
        url += f":{connection.port}"
    if connection.schema:
        url += "/" + quote(connection.schema, safe="/@:,#+")
    scalars = {k: v for k, v in (connection.extra or {}).items() if isinstance(v, str | int)}
    if scalars:
        url += "?" + urlencode(scalars)
    return url


def resolve_urls(target: Target, environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(a description without the secret, the URL text) for each URL source of `target`."""
    environ = os.environ if environ is None else environ
    found: list[tuple[str, str]] = []
    inline = 0
    for url in target.urls:
        if url.startswith(ENV_PREFIX):
            name = url[len(ENV_PREFIX) :]
            value = environ.get(name, "").strip()
            if not value:
                raise NotifierError(f"environment variable {name} (for {url}) is not set")
            found.append((url, value))
        else:
            inline += 1
            found.append((f"inline URL #{inline}", url))
    if target.conn_id:
        from engine.sdk.connections import Connection

        connection = Connection.get(target.conn_id)
        urls = connection_urls(connection)
        found += [(f"URL #{i} of connection {target.conn_id}", u) for i, u in enumerate(urls, 1)]
    for _, url in found:
        secrets.mask_secret(url)
        mask_urls(url)
    return found


@functools.cache
def load_apprise() -> Any:
    """The apprise module, imported on first use; the loggers that see URLs are masked.

    Apprise's PGP support imports `imghdr`, deprecated on Python 3.11 and 3.12; that
    warning is about Apprise, not about dagwatch, so it is silenced for this import.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
        import apprise
        import apprise.plugins.email  # the module that imports imghdr
    for name in _LOGGERS_SEEING_URLS:
        logging.getLogger(name).addFilter(secrets.RedactingFilter())
    return apprise


def warm_up() -> None:
    """Import Apprise and let it discover its plugins (seconds on a busy host), so the
    first page does not wait for it. Nothing is sent."""
    load_apprise().Apprise.instantiate("json://localhost")


def build_apprise(
    target: Target, config: Config, environ: Mapping[str, str] | None = None
) -> apprise.Apprise:
    """An Apprise object holding every URL of `target`, all tagged with its tag (if any).

    Its services run one after the other in the calling thread, with no deadline of
    Apprise's own: the caller bounds the delivery (Apprise's shared thread pools would let
    one hanging channel delay another's messages).
    """
    lib = load_apprise()
    asset = lib.AppriseAsset(async_mode=False, service_timeout=0)
    notifier: apprise.Apprise = lib.Apprise(asset=asset)
    for where, url in resolve_urls(target, environ):
        if not notifier.add(url, tag=target.tag):
            raise NotifierError(f"{where} is not a valid Apprise URL")
    if target.tag:
        path = str(config["alerts.apprise_config"] or "")
        if not path:
            raise NotifierError(
                f"tag {target.tag!r} needs alerts.apprise_config (an Apprise configuration file)"
            )
        if not Path(path).expanduser().is_file():
            raise NotifierError(f"alerts.apprise_config = {path}: no such file")
        loaded = lib.AppriseConfig(asset=asset)
        if not loaded.add(str(Path(path).expanduser())):
            raise NotifierError(f"alerts.apprise_config = {path}: not an Apprise configuration")
        for server in loaded.services():
            mask_url(server.url())
        notifier.add(loaded)
    return notifier


# -- messages ------------------------------------------------------------------------------

#: Titles per event (Jinja over the alert's context); a route's `title` replaces them.
DEFAULT_TITLES: dict[str, str] = {
    "task_failed": "[dagwatch] {{ dag_id }}.{{ task_id }} failed",
    "task_retry": "[dagwatch] {{ dag_id }}.{{ task_id }} up for retry (attempt {{ attempt }})",
    "task_succeeded": "[dagwatch] {{ dag_id }}.{{ task_id }} succeeded",
    "task_resolved": "[dagwatch] {{ dag_id }}.{{ task_id }} recovered",
    "task_started": "[dagwatch] {{ dag_id }}.{{ task_id }} started",
    "task_skipped": "[dagwatch] {{ dag_id }}.{{ task_id }} skipped",
    "dag_run_failed": "[dagwatch] DAG {{ dag_id }} run {{ run_id }} failed",
    "dag_run_succeeded": "[dagwatch] DAG {{ dag_id }} run {{ run_id }} succeeded",
    "sla_missed": "[dagwatch] SLA missed: {{ dag_id }}{% if task_id %}.{{ task_id }}{% endif %}",
    "deadline_at_risk": "[dagwatch] deadline at risk: {{ dag_id }} run {{ run_id }}",
    "run_not_started": "[dagwatch] {{ dag_id }}: run {{ run_id }} has not started",
    "zombie_killed": "[dagwatch] {{ dag_id }}.{{ task_id }} stopped heartbeating (zombie)",
    "import_error": "[dagwatch] DAG import error in {{ filename }}",
    "scheduler_unhealthy": "[dagwatch] scheduler on {{ hostname }} (job {{ job_id }}) "
    "stopped heartbeating",
    "alert_delivery_failed": "[dagwatch] alert #{{ failed_alert_id }} ({{ failed_event }}) "
    "could not be delivered",
    "test": "[dagwatch] test notification",
}
GENERIC_TITLE = (
    "[dagwatch] {{ event }}{% if dag_id %}: {{ dag_id }}{% endif %}"
    "{% if task_id %}.{{ task_id }}{% endif %}"
)
#: (label, context key) of the default body, in order; empty values are left out.
_BODY_FIELDS = (
    ("DAG", "dag_id"),
    ("Task", "task_id"),
    ("Run", "run_id"),
    ("State", "state"),
    ("Attempt", "attempt"),
    ("Duration", "duration"),
    ("Error", "exception"),
    ("Deadline", "deadline"),
    ("File", "filename"),
    ("Scheduler job", "job_id"),
    ("Host", "hostname"),
    ("Last heartbeat", "latest_heartbeat"),
    ("Failed alert", "failed_alert_id"),
    ("Failed route", "failed_route"),
    ("Attempts", "attempts"),
    ("Last error", "error"),
    ("Message", "message"),
    ("Link", "link"),
)


@functools.cache
def _sandbox() -> SandboxedEnvironment:
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(
        autoescape=False, finalize=lambda value: "" if value is None else value
    )


def compile_template(source: str, what: str) -> None:
    """Check a template's syntax now (a DAG file or route error, not a failed delivery)."""
    from jinja2 import TemplateSyntaxError

    try:
        _sandbox().from_string(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"{what}: invalid Jinja template (line {exc.lineno}): {exc}") from None


def render(source: str, context: Mapping[str, Any]) -> str:
    """A Jinja template rendered in the sandbox (templates come from configuration)."""
    return _sandbox().from_string(source).render(**context).strip()


def _body_value(key: str, context: Mapping[str, Any]) -> str | None:
    value = context.get(key)
    if value in (None, ""):
        return None
    if key == "attempt" and context.get("max_attempts"):
        return f"{value} of {context['max_attempts']}"
    if key == "duration" and isinstance(value, int | float):
        return f"{value:.1f} s"
    return str(value)


def default_body(context: Mapping[str, Any]) -> str:
    """The body of a message when no template is given: one labelled line per known fact."""
    lines = []
    for label, key in _BODY_FIELDS:
        value = _body_value(key, context)
        if value is not None:
            lines.append(f"{label}: {value}")
    for miss in context.get("misses") or ():
        if isinstance(miss, Mapping):
            where = f" {miss['task_id']}" if miss.get("task_id") else ""
            lines.append(f"Missed: {miss.get('kind', 'sla')}{where}, due {miss.get('deadline')}")
    return "\n".join(lines)


def render_message(
    event: str,
    context: Mapping[str, Any],
    title: str | None = None,
    body: str | None = None,
) -> tuple[str, str]:
    """(title, body) of an alert: the given templates, else the event's defaults."""
    context = {"event": event, **context}
    rendered_title = render(title or DEFAULT_TITLES.get(event, GENERIC_TITLE), context)
    rendered_body = render(body, context) if body else default_body(context)
    return rendered_title, rendered_body


def severity_of(event: str) -> str:
    """The default severity of an event name (info for the notifier's own events)."""
    try:
        return DEFAULT_SEVERITY[Event(event)]
    except ValueError:
        return "info"


def notify_type_of(event: str, severity: str) -> str:
    """The Apprise notify_type of an alert: success for recoveries, else by severity."""
    if event in _SUCCESS_EVENTS:
        return "success"
    return NOTIFY_TYPE.get(severity, "info")


# -- targets stored with an alert ------------------------------------------------------------


def seal_target(target: Target, config: Config) -> dict[str, Any]:
    """The target as stored in an outbox row: references as is, inline URLs encrypted."""
    refs = [url for url in target.urls if url.startswith(ENV_PREFIX)]
    inline = [url for url in target.urls if not url.startswith(ENV_PREFIX)]
    sealed = secrets.encrypt(config, json.dumps(inline)).decode() if inline else None
    return {"urls": refs, "sealed_urls": sealed, "conn_id": target.conn_id, "tag": target.tag}


def unseal_target(data: Mapping[str, Any], config: Config) -> Target:
    """The Target of a stored row, inline URLs decrypted (and registered for masking)."""
    urls = list(data.get("urls") or ())
    if data.get("sealed_urls"):
        token = str(data["sealed_urls"]).encode()
        inline = json.loads(secrets.decrypt(config, token, "the notifier's URLs"))
        for url in inline:
            mask_url(url)
        urls += inline
    return Target(tuple(urls), data.get("conn_id"), data.get("tag"))


# -- the callback --------------------------------------------------------------------------

_TASK_STATE_EVENTS = {
    "failed": Event.TASK_FAILED.value,
    "up_for_retry": Event.TASK_RETRY.value,
    "success": Event.TASK_SUCCEEDED.value,
    "skipped": "task_skipped",
    "running": "task_started",
}
_SLA_KEYS = ("slas", "sla_miss", "sla_misses", "deadline")


def _callback_context(args: Sequence[Any]) -> tuple[dict[str, Any], bool]:
    """(the context, whether it is an SLA miss) from a callback's positional arguments.

    Every dagwatch callback gets one context dict; Airflow's sla_miss_callback gets
    (dag, task_list, blocking_task_list, slas, blocking_tis).
    """
    if len(args) == 1 and isinstance(args[0], Mapping):
        context = dict(args[0])
        return context, any(key in context for key in _SLA_KEYS)
    names = ("dag", "task_list", "blocking_task_list", "slas", "blocking_tis")
    context = dict(zip(names, args, strict=False))
    slas = context.get("slas") or []
    first = slas[0] if isinstance(slas, list | tuple) and slas else None
    context.setdefault("dag_id", getattr(context.get("dag"), "dag_id", None))
    context.setdefault("run_id", getattr(first, "run_id", None))
    context.setdefault("task_id", getattr(first, "task_id", None))
    return context, True


def _ids(context: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    ti = context.get("ti") or context.get("task_instance")
    run = context.get("dag_run")
    dag_id = (
        context.get("dag_id")
        or getattr(ti, "dag_id", None)
        or getattr(run, "dag_id", None)
        or getattr(context.get("dag"), "dag_id", None)
    )
    run_id = context.get("run_id") or getattr(run, "run_id", None) or getattr(ti, "run_id", None)
    task_id = context.get("task_id") or getattr(ti, "task_id", None)
    return dag_id, run_id, task_id


def _task_facts(ti: Any, context: Mapping[str, Any]) -> dict[str, Any]:
    """Event, state and duration of a task callback, from the task instance's row.

    The runner calls a task's callbacks after recording the attempt's outcome, so the row
    tells which callback this is; if the row has already moved on (another attempt), the
    context decides: no `exception` key is on_execute, None is success, else retry while
    tries remain.
    """
    from sqlalchemy import select

    from engine import runtime
    from engine.store.models import TaskInstance

    columns = (TaskInstance.state, TaskInstance.try_number, TaskInstance.duration)
    statement = select(*columns).where(
        TaskInstance.dag_id == ti.dag_id,
        TaskInstance.run_id == ti.run_id,
        TaskInstance.task_id == ti.task_id,
        TaskInstance.map_index == getattr(ti, "map_index", -1),
    )
    with runtime.get_store().session(readonly=True) as session:
        row = session.execute(statement).first()
    moved_on = row is None or row.try_number != ti.try_number
    state = None if row is None or moved_on else str(row.state)
    event = _TASK_STATE_EVENTS.get(state or "")
    if event == "task_started" and "exception" in context:
        event = None  # an after-attempt callback never sees its own attempt running
    if event is None:
        if "exception" not in context:
            event, state = "task_started", "running"
        elif context.get("exception") is None:
            event, state = Event.TASK_SUCCEEDED.value, "success"
        elif ti.try_number <= ti.max_tries:
            event, state = Event.TASK_RETRY.value, "up_for_retry"
        else:
            event, state = Event.TASK_FAILED.value, "failed"
    return {
        "event": event,
        "state": state,
        "attempt": ti.try_number,
        "max_attempts": ti.max_tries + 1,
        "duration": row.duration if row is not None else None,
    }


def _dag_facts(context: Mapping[str, Any]) -> dict[str, Any]:
    run = context.get("dag_run")
    state = str(getattr(run, "state", None) or context.get("reason") or "")
    event = {"failed": Event.DAG_RUN_FAILED.value, "success": Event.DAG_RUN_SUCCEEDED.value}
    return {"event": event.get(state, f"dag_run_{state or 'unknown'}"), "state": state or None}


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _sla_facts(context: Mapping[str, Any]) -> dict[str, Any]:
    """An SLA miss: the misses the engine passes (`sla_misses`) or Airflow's `slas`."""
    misses = []
    for miss in context.get("sla_misses") or context.get("slas") or ():
        if isinstance(miss, Mapping):
            misses.append({key: _iso(value) for key, value in miss.items()})
        else:  # Airflow-style SlaMiss objects
            fields = ("kind", "task_id", "deadline")
            misses.append({key: _iso(getattr(miss, key, None)) for key in fields})
    first = misses[0] if misses else {}
    return {
        "event": Event.SLA_MISSED.value,
        "state": "sla_missed",
        "misses": misses,
        "message": context.get("reason"),
        "task_id": first.get("task_id"),
        "deadline": first.get("deadline"),
    }


class AppriseNotifier:
    """A callback that notifies Apprise URLs, a Connection or an Apprise config tag.

        PythonOperator(..., on_failure_callback=AppriseNotifier(urls="env:SLACK_URL"))
        DAG(..., on_failure_callback=[AppriseNotifier(conn_id="pagerduty")])

    A call writes an alert (route `notifier`) to the outbox with the rendered title and
    body; the dispatcher delivers it with retries. Inline URLs are stored encrypted.
    Templates are Jinja over the callback context plus dag_id, task_id, run_id, attempt,
    max_attempts, state, exception, duration, deadline, event and link.
    """

    def __init__(
        self,
        urls: str | Sequence[str] | None = None,
        conn_id: str | None = None,
        tag: str | None = None,
        title: str | None = None,
        body: str | None = None,
        notify_type: str | None = None,
    ) -> None:
        self.target = Target.from_fields(urls, conn_id, tag)
        if notify_type is not None and notify_type not in NOTIFY_TYPES:
            raise ValueError(f"notify_type {notify_type!r}; allowed: {', '.join(NOTIFY_TYPES)}")
        for what, source in (("title", title), ("body", body)):
            if source:
                compile_template(source, f"AppriseNotifier {what}")
        self.title = title
        self.body = body
        self.notify_type = notify_type
        identity = json.dumps([self.target.to_dict(), title, body, notify_type], sort_keys=True)
        self.digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        #: its rows are delivered one at a time, apart from every other channel
        self.channel = f"{NOTIFIER_ROUTE}#{self.digest}"

    def __repr__(self) -> str:
        return f"AppriseNotifier({self.target.describe()})"

    def __call__(self, *args: Any) -> int | None:
        """Write the notification for this callback to the outbox; returns the alert id."""
        from engine import runtime

        config = runtime.get_config()
        if not config["alerts.enabled"]:
            log.info("alerts.enabled is off: %r sends nothing", self)
            return None
        context, sla = _callback_context(args)
        return self.enqueue(context, config, sla=sla)

    def facts(self, context: Mapping[str, Any], *, sla: bool = False) -> dict[str, Any]:
        """What the message and the alert row say about this call."""
        dag_id, run_id, task_id = _ids(context)
        ti = context.get("ti") or context.get("task_instance")
        if sla:
            facts: dict[str, Any] = _sla_facts(context)
            task_id = task_id or facts.pop("task_id", None)
        elif ti is not None and getattr(ti, "try_number", None) is not None:
            facts = _task_facts(ti, context)
        else:
            facts = _dag_facts(context)
        exception = context.get("exception")
        deadline = facts.pop("deadline", None) or context.get("deadline")
        return {
            **facts,
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "exception": secrets.redact(str(exception)) if exception is not None else None,
            "deadline": _iso(deadline),
        }

    def enqueue(
        self, context: Mapping[str, Any], config: Config, *, sla: bool = False
    ) -> int | None:
        """Render and write the outbox row (one per occurrence: a repeated call is a no-op)."""
        from alerts.routes import run_link
        from engine import runtime

        facts = self.facts(context, sla=sla)
        facts["link"] = run_link(config, facts["dag_id"], facts["run_id"])
        event = facts["event"]
        title, body = render_message(event, {**context, **facts}, self.title, self.body)
        severity = severity_of(event)
        keys = ("state", "attempt", "max_attempts", "duration", "exception", "misses", "message")
        payload = {key: facts.get(key) for key in keys if facts.get(key) is not None}
        payload |= {
            "dag_id": facts["dag_id"],
            "run_id": facts["run_id"],
            "task_id": facts["task_id"],
            "deadline": facts["deadline"],
            "link": facts["link"],
            "title": secrets.redact(title),
            "body": secrets.redact(body),
            "notify_type": self.notify_type or notify_type_of(event, severity),
            "target": seal_target(self.target, config),
            "event": event,
            "severity": severity,
        }
        extra = self.digest + (f"#{facts['deadline']}" if sla and facts["deadline"] else "")
        row = outbox.NewAlert(
            event=event,
            route=NOTIFIER_ROUTE,
            fingerprint=fingerprint(
                event,
                NOTIFIER_ROUTE,
                dag_id=facts["dag_id"],
                run_id=facts["run_id"],
                task_id=facts["task_id"],
                attempt=facts.get("attempt"),
                extra=extra,
            ),
            severity=severity,
            dag_id=facts["dag_id"],
            run_id=facts["run_id"],
            task_id=facts["task_id"],
            payload=payload,
            group_key=group_key(
                event, f"{NOTIFIER_ROUTE}#{self.digest}", facts["dag_id"], facts["task_id"]
            ),
            channel=self.channel,
        )
        with runtime.get_store().session() as session:
            ids = outbox.enqueue(session, [row], datetime.now(UTC))
        return ids[0] if ids else None
