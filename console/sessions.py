"""A password login that survives reloads and new tabs: a signed, expiring session token.

The token is `v1.<payload>.<signature>`: the payload (base64url JSON) names the user, when
the token expires and a fingerprint of the user's password hash and role; the signature
is an HMAC-SHA256 with the console's session key (`console.session_secret`, or a key
generated once in `$DAGWATCH_HOME/console_session.key`, owner-only). A token is refused
when its signature does not match (tampered, or signed with another key), when it has
expired, when the user is gone, or when their password or role changed since it was
issued. The browser keeps it in an HttpOnly cookie set by the console's own route
(`console/server.py`), so page scripts cannot read it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

from console.users import User
from engine.config import Config
from engine.secrets import generated_key_file
from engine.store.db import Store
from engine.store.models import ConsoleUser

#: the cookie's name (its value is a token)
COOKIE = "dagwatch_session"
KEY_FILE = "console_session.key"
_VERSION = "v1"


def session_key(config: Config) -> bytes:
    """`console.session_secret`, or the generated key file (created on first use)."""
    configured = str(config["console.session_secret"] or "")
    if configured:
        return configured.encode()
    key, _created = generated_key_file(
        Path(config.home) / KEY_FILE, lambda: secrets.token_urlsafe(48)
    )
    return key.encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _fingerprint(password_hash: str | None, role: str) -> str:
    """Changes when the password or the role does: older tokens stop working."""
    return hashlib.sha256(f"{password_hash or ''}|{role}".encode()).hexdigest()[:32]


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, f"{_VERSION}.{payload}".encode(), hashlib.sha256).digest())


def _row(store: Store, username: str) -> tuple[str | None, str] | None:
    with store.session(readonly=True) as session:
        row = session.get(ConsoleUser, username)
        return None if row is None else (row.password_hash, row.role)


def issue(store: Store, key: bytes, user: User, *, hours: float, now: float | None = None) -> str:
    """A token for `user` (who has just logged in), valid for `hours`."""
    found = _row(store, user.name)
    if found is None:
        raise LookupError(f"no console user {user.name!r}")
    now = time.time() if now is None else now
    body = {"u": user.name, "exp": int(now + hours * 3600), "f": _fingerprint(*found)}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{_VERSION}.{payload}.{_sign(key, payload)}"


def _claims(key: bytes, token: str, now: float) -> dict[str, Any] | None:
    """The payload of a well-signed, unexpired token, else None."""
    try:
        version, payload, signature = token.split(".")
    except ValueError:
        return None
    if version != _VERSION or not hmac.compare_digest(signature, _sign(key, payload)):
        return None
    try:
        claims = json.loads(_unb64(payload))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
        return None
    return claims if claims["exp"] > now else None


def expires_in(key: bytes, token: str, now: float | None = None) -> int:
    """Seconds the token has left (0 for a bad or expired one): the cookie's max-age."""
    now = time.time() if now is None else now
    claims = _claims(key, token, now)
    return 0 if claims is None else int(claims["exp"] - now)


def verify(store: Store, key: bytes, token: str, *, now: float | None = None) -> User | None:
    """The user a token stands for, or None when it is refused (see the module doc)."""
    claims = _claims(key, token, time.time() if now is None else now)
    if claims is None or not isinstance(claims.get("u"), str):
        return None
    found = _row(store, claims["u"])
    if found is None or not hmac.compare_digest(str(claims.get("f")), _fingerprint(*found)):
        return None
    return User(claims["u"], found[1])
