"""Secrets: Fernet encryption of metastore values, and masking of secrets in output.

Encryption keys come from `core.fernet_key` (comma-separated: the first encrypts, all
decrypt, so a key can be rotated in), or from a key file generated in $DAGWATCH_HOME.
Masking lives in `engine.masking` (re-exported here): once a secret is known to a process
(`mask_secret`), everything that process writes or sends shows "***" in its place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import Config
from engine.exceptions import ConfigError, StoreError
from engine.masking import (  # noqa: F401 - the masking API, re-exported
    MIN_SECRET_LENGTH,
    SENSITIVE_KEY_PARTS,
    RedactingFilter,
    RedactingStream,
    SecretsMasker,
    get_masker,
    install_log_redaction,
    is_sensitive_key,
    mask_secret,
    redact,
    redact_stream,
    redact_value,
)

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

    from engine.store.db import Store

log = logging.getLogger(__name__)

FERNET_KEY_FILE = "fernet.key"

# --- encryption -------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _multi_fernet(keys: tuple[str, ...], source: str) -> MultiFernet:
    # cryptography loads when a value is encrypted or decrypted, not with the masking API
    from cryptography.fernet import Fernet, MultiFernet

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


def generated_key_file(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    """The key kept in `path`, created owner-only (mode 0600) from `make()` on first use;
    returns (key, whether it was created here). Safe against a concurrent creator: the
    first file written wins."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(make() + "\n")
    try:
        os.link(temporary, path)  # atomic: a concurrent process's key wins, ours is dropped
    except FileExistsError:
        created = False
    else:
        created = True
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text().strip(), created


def _key_file(home: Path) -> str:
    """The generated key in $DAGWATCH_HOME/fernet.key, created (mode 0600) on first use."""
    from cryptography.fernet import Fernet

    path = home / FERNET_KEY_FILE
    key, created = generated_key_file(path, lambda: Fernet.generate_key().decode())
    if created:
        log.warning(
            "generated a Fernet key in %s: variables and connections are encrypted with it; "
            "back it up, or set core.fernet_key",
            path,
        )
    return key


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
    mask_secret(keys)  # the generated key file is a secret too
    return _multi_fernet(keys, source)


def encrypt(config: Config, text: str) -> bytes:
    """`text` encrypted with the first key."""
    return get_fernet(config).encrypt(text.encode("utf-8"))


def decrypt(config: Config, token: bytes, what: str = "the value") -> str:
    """Decrypt a token made by `encrypt` with any of the configured keys."""
    return decrypt_token(get_fernet(config), token, what)


def decrypt_token(fernet: MultiFernet, token: bytes, what: str = "the value") -> str:
    """Decrypt with an already-built MultiFernet (many rows, one key lookup)."""
    from cryptography.fernet import InvalidToken

    try:
        return fernet.decrypt(bytes(token)).decode("utf-8")
    except InvalidToken:
        raise StoreError(
            f"cannot decrypt {what}: the value was encrypted with a key that is not in "
            "core.fernet_key"
        ) from None


def rotate_fernet_key(store: Store, config: Config) -> int:
    """Re-encrypt every variable and connection with the first key; returns rows changed."""
    from engine.store import variables

    fernet = get_fernet(config)

    def rotate(token: bytes, what: str) -> bytes:
        decrypt_token(fernet, token, what)  # a clear error instead of a bare InvalidToken
        return fernet.rotate(bytes(token))

    with store.session() as session:
        return variables.reencrypt_all(session, rotate)
