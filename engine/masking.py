"""Masking of secrets in everything dagwatch writes or sends.

Masking is per process, as in Airflow: a process hides the secrets it knows. It knows
those it read (`mask_secret`: a Connection's password, a secret Variable, a notifier's
URL) and those it can learn by itself (`learn_secrets`, called by `runtime.configure`:
secret configuration values and the `DAGWATCH_CONN_*` / `DAGWATCH_VAR_*` environment).
So text that can carry user content is masked in the process that produced it, before
it leaves:

- log records (`RedactingFilter` on the handlers) and an attempt's stdout/stderr
  (`RedactingStream`);
- the metastore columns that hold such text (`MaskedText`, `MaskedJSON` of
  `engine.store.models`: try errors, transition reasons, callback records, alert
  payloads and delivery errors, import errors, audit rows);
- the error texts an attempt process reports to its worker and the executor;
- alert titles and bodies on their way to a channel, and custom metrics' labels.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import unquote, urlsplit

from engine.config import MASK

if TYPE_CHECKING:
    from engine.config import Config

#: Shorter values are not masked: masking "a" or "42" would garble every line of output.
MIN_SECRET_LENGTH = 3
SENSITIVE_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "access_token",
    "authorization",
    "private_key",
    "token",
    "credential",
)
CONN_ENV_PREFIX = "DAGWATCH_CONN_"
VAR_ENV_PREFIX = "DAGWATCH_VAR_"
#: Keys whose values are ciphertext, never masked (see `redact_value`).
SEALED_PREFIX = "sealed_"

log = logging.getLogger(__name__)


def is_sensitive_key(name: str) -> bool:
    """Whether a variable, extra or field named `name` holds a secret (Airflow's heuristic)."""
    normalized = name.lower().replace("-", "_")
    return any(part in normalized for part in SENSITIVE_KEY_PARTS)


class SecretsMasker:
    """The set of secret values to hide; one per process (`mask_secret`, `redact`)."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: Any) -> None:
        """Remember a secret: strings (too-short ones skipped), and dict/list values."""
        if isinstance(value, dict):
            for item in value.values():
                self.add(item)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                self.add(item)
        elif isinstance(value, str) and len(value.strip()) >= MIN_SECRET_LENGTH:
            with self._lock:
                if value not in self._secrets:
                    self._secrets.add(value)
                    self._pattern = None

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._secrets:
                # Longest first, so a secret containing another is masked whole.
                ordered = sorted(self._secrets, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(secret) for secret in ordered))
            return self._pattern

    def redact(self, text: str) -> str:
        """`text` with every registered secret replaced by ***."""
        if not self._secrets or not text:  # the common case, without the lock
            return text
        pattern = self._compiled()
        return text if pattern is None else pattern.sub(MASK, text)

    @property
    def active(self) -> bool:
        return bool(self._secrets)

    def clear(self) -> None:
        """Forget every secret (tests)."""
        with self._lock:
            self._secrets.clear()
            self._pattern = None


_masker = SecretsMasker()


def get_masker() -> SecretsMasker:
    """The process-wide masker."""
    return _masker


def mask_secret(value: Any) -> None:
    """Hide `value` (a string, or the values of a dict/list) in logs and task output."""
    _masker.add(value)


def redact(text: str) -> str:
    """`text` with every secret registered by `mask_secret` replaced by ***."""
    return _masker.redact(text)


def redact_value(value: Any) -> Any:
    """`value` with secrets masked in every string it holds (dicts, lists, tuples).

    Values under keys starting with `sealed_` are ciphertext (an alert's encrypted
    notifier URLs): masking could only corrupt them, so they are left as they are.
    """
    if not _masker.active:
        return value
    if isinstance(value, str):
        return _masker.redact(value)
    if isinstance(value, Mapping):
        return {
            redact_value(key): item
            if isinstance(key, str) and key.startswith(SEALED_PREFIX)
            else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item) for item in value)
    return value


# --- what a process can learn by itself --------------------------------------------------


def mask_url_password(url: str) -> None:
    """Hide the password of `scheme://user:password@host/...` (clear and URL-quoted)."""
    try:
        password = urlsplit(url.strip()).password
    except ValueError:
        return
    if password:
        mask_secret(password)
        mask_secret(unquote(password))


def learn_config_secrets(config: Config) -> None:
    """Hide the values of secret options given as text: keys whole, URLs by their password
    (the metastore's URL stays recognisable in logs).

    Notifier URLs (`alerts.routes`, `alerts.fallback_urls`) are learnt, whole and by their
    tokens, by the alerts plugin that reads them.
    """
    for setting in config.settings.values():
        if not setting.option.secret or not isinstance(setting.value, str):
            continue
        for part in setting.value.split(","):  # comma-separated keys or URLs
            part = part.strip()
            if "://" in part:
                mask_url_password(part)
            else:
                mask_secret(part)


def learn_environment_secrets(environ: Mapping[str, str]) -> None:
    """Hide `DAGWATCH_CONN_*` passwords and `DAGWATCH_VAR_*` values under sensitive keys."""
    for name, value in environ.items():
        if name.startswith(VAR_ENV_PREFIX) and is_sensitive_key(name[len(VAR_ENV_PREFIX) :]):
            mask_secret(value)
        elif name.startswith(CONN_ENV_PREFIX) and value.strip():
            # imported only when a connection is given: most processes have none
            from engine.sdk.connections import Connection

            try:
                connection = Connection.from_env_value(name[len(CONN_ENV_PREFIX) :], value)
            except (ValueError, TypeError):  # reported when a task reads it, not here
                mask_url_password(value)
                continue
            connection.mask_secrets()


def learn_secrets(config: Config, environ: Mapping[str, str] | None = None) -> None:
    """Hide what this process can know without reading a secret on purpose (see the module
    docstring), and mask its log handlers; `runtime.configure` calls it in every dagwatch
    process."""
    learn_config_secrets(config)
    learn_environment_secrets(os.environ if environ is None else environ)
    install_log_redaction()


# --- log records and streams --------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """A logging filter that replaces registered secrets in messages, args and tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _masker.active:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: let logging report it
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a RedactingFilter to every handler of `logger` (the root logger by default),
    and to the handler of last resort, which prints for a process that set up none."""
    handlers = list((logger or logging.getLogger()).handlers)
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class RedactingStream(io.TextIOBase):
    """A text stream proxy that redacts secrets before writing to the wrapped stream.

    Output is held back until a newline (or flush), so a secret written in pieces is
    still masked.
    """

    MAX_PENDING = 65536

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        if self.closed:
            raise ValueError("write to a closed stream")
        self._pending += text
        done, newline, rest = self._pending.rpartition("\n")
        if newline:
            self._stream.write(redact(done + newline))
            self._pending = rest
        if len(self._pending) > self.MAX_PENDING:
            self._stream.write(redact(self._pending))
            self._pending = ""
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(redact(self._pending))
            self._pending = ""
        self._stream.flush()

    def close(self) -> None:
        """Flush, but leave the wrapped stream (often sys.stdout) open."""
        if not self.closed:
            self.flush()
        super().close()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")

    @property
    def wrapped(self) -> TextIO:
        return self._stream


def redact_stream(stream: TextIO) -> RedactingStream:
    """Wrap a text stream (a task's stdout/stderr) so registered secrets never reach it."""
    return RedactingStream(stream)
