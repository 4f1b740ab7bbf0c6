"""Secrets: Fernet encryption of metastore values, and masking of secrets in output.

Encryption keys come from `core.fernet_key` (comma-separated: the first encrypts, all
decrypt, so a key can be rotated in), or from a key file generated in $DAGWATCH_HOME.
Masking is process-wide, as in Airflow: once a secret has been read (`mask_secret`), every
log record passing a `RedactingFilter` and every write to a `redact_stream` shows "***".
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from engine.config import MASK, Config
from engine.exceptions import ConfigError, StoreError

if TYPE_CHECKING:
    from engine.store.db import Store

log = logging.getLogger(__name__)

FERNET_KEY_FILE = "fernet.key"
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

# --- encryption -------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _multi_fernet(keys: tuple[str, ...], source: str) -> MultiFernet:
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.encode()))
        except ValueError:  # includes binascii.Error; never echo the key itself
            which = f"key {position} of {len(keys)}" if len(keys) > 1 else "the key"
            raise ConfigError(
                f"{source}: {which} is not a valid Fernet key "
                "(expected 32 url-safe base64-encoded bytes, e.g. from Fernet.generate_key())"
            ) from None
    return MultiFernet(fernets)


def _key_file(home: Path) -> str:
    """The generated key in $DAGWATCH_HOME/fernet.key, created (mode 0600) on first use."""
    path = home / FERNET_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{FERNET_KEY_FILE}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(Fernet.generate_key().decode() + "\n")
    try:
        os.link(temporary, path)  # atomic: a concurrent process's key wins, ours is dropped
    except FileExistsError:
        pass
    else:
        log.warning(
            "generated a Fernet key in %s: variables and connections are encrypted with it; "
            "back it up, or set core.fernet_key",
            path,
        )
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text().strip()


def get_fernet(config: Config) -> MultiFernet:
    """The keys of `core.fernet_key` (or the generated key file) as one MultiFernet."""
    raw = str(config.get("core.fernet_key") or "").strip()
    source = "core.fernet_key"
    if not raw:
        raw = _key_file(config.home)
        source = str(config.home / FERNET_KEY_FILE)
    keys = tuple(key.strip() for key in raw.split(",") if key.strip())
    if not keys:
        raise ConfigError(f"{source}: no Fernet key found")
    return _multi_fernet(keys, source)


def encrypt(config: Config, text: str) -> bytes:
    """`text` encrypted with the first key."""
    return get_fernet(config).encrypt(text.encode("utf-8"))


def decrypt(config: Config, token: bytes, what: str = "the value") -> str:
    """Decrypt a token made by `encrypt` with any of the configured keys."""
    return decrypt_token(get_fernet(config), token, what)


def decrypt_token(fernet: MultiFernet, token: bytes, what: str = "the value") -> str:
    """Decrypt with an already-built MultiFernet (many rows, one key lookup)."""
    try:
        return fernet.decrypt(bytes(token)).decode("utf-8")
    except InvalidToken:
        raise StoreError(
            f"cannot decrypt {what}: the value was encrypted with a key that is not in "
            "core.fernet_key"
        ) from None


def rotate_fernet_key(store: Store, config: Config) -> int:
    """Re-encrypt every variable and connection with the first key; returns rows changed."""
    from sqlalchemy import select

    from engine.store.models import Connection, Variable

    fernet = get_fernet(config)

    def rotate(token: bytes, what: str) -> bytes:
        decrypt_token(fernet, token, what)  # a clear error instead of a bare InvalidToken
        return fernet.rotate(bytes(token))

    count = 0
    with store.session() as session:
        for variable in session.scalars(select(Variable)):
            variable.val = rotate(variable.val, f"variable {variable.key!r}")
            count += 1
        for connection in session.scalars(select(Connection)):
            what = f"connection {connection.conn_id!r}"
            if connection.password is not None:
                connection.password = rotate(connection.password, what)
            if connection.extra is not None:
                connection.extra = rotate(connection.extra, what)
            count += 1
    return count


# --- masking ----------------------------------------------------------------------------


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
        pattern = self._compiled()
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

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
    """Add a RedactingFilter to every handler of `logger` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
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
