"""Console users: a role each and a salted scrypt hash of the password (never the password).

scrypt comes from the standard library (hashlib); its cost makes guessing slow, the salt
makes equal passwords hash differently, and verification compares in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update

from console.settings import ROLES
from engine.exceptions import DagwatchError, NotFound
from engine.store.audit import record_audit
from engine.store.db import Store
from engine.store.models import ID_LEN, ConsoleUser

#: scrypt cost (n, r, p): about 50 ms and 16 MiB per hash on one core
_N, _R, _P = 2**14, 8, 1
_SCHEME = "scrypt"


@dataclass(frozen=True)
class User:
    """Who is using the console and what they may do."""

    name: str
    role: str

    @property
    def can_act(self) -> bool:
        return self.role in ("operator", "admin")

    @property
    def can_admin(self) -> bool:
        return self.role == "admin"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$salt$hash`, base64 fields."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"{_SCHEME}${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether `password` matches the stored hash (False for a malformed or missing one)."""
    try:
        scheme, n, r, p, salt, digest = (stored or "").split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def check_role(role: str) -> str:
    """The role, or a clear error naming the allowed ones."""
    if role not in ROLES:
        raise DagwatchError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def create_user(
    store: Store, username: str, role: str, password: str | None, *, actor: str = "cli"
) -> None:
    """Add a user (password users need a password; OIDC users may have none)."""
    check_role(role)
    if not username.strip() or len(username) > ID_LEN:
        raise DagwatchError(f"username must be 1 to {ID_LEN} characters")
    if password is not None and not password:
        raise DagwatchError("the password is empty")
    now = datetime.now(UTC)
    with store.session() as session:
        if session.get(ConsoleUser, username) is not None:
            raise DagwatchError(f"user {username!r} exists; delete it first to change it")
        session.add(
            ConsoleUser(
                username=username,
                role=role,
                password_hash=hash_password(password) if password else None,
                created_at=now,
            )
        )
        record_audit(
            session, actor=actor, event="users.create", extra={"username": username, "role": role}
        )


def delete_user(store: Store, username: str, *, actor: str = "cli") -> None:
    """Remove a user (NotFound when there is none)."""
    with store.session() as session:
        row = session.get(ConsoleUser, username)
        if row is None:
            raise NotFound(f"no console user {username!r}")
        session.delete(row)
        record_audit(session, actor=actor, event="users.delete", extra={"username": username})


def list_users(store: Store) -> list[dict[str, object]]:
    """Users by name, without their hashes."""
    with store.session(readonly=True) as session:
        rows = session.execute(select(ConsoleUser).order_by(ConsoleUser.username)).scalars()
        return [
            {
                "username": row.username,
                "role": row.role,
                "created_at": row.created_at,
                "last_login": row.last_login,
            }
            for row in rows
        ]


def authenticate(store: Store, username: str, password: str) -> User | None:
    """The user when the password matches, else None; a login is recorded."""
    with store.session(readonly=True) as session:
        row = session.get(ConsoleUser, username)
        stored = (row.password_hash, row.role) if row is not None else None
    if stored is None:
        verify_password(password, hash_password("x"))  # as slow as a real check
        return None
    if not verify_password(password, stored[0]):
        return None
    with store.session() as session:
        session.execute(
            update(ConsoleUser)
            .where(ConsoleUser.username == username)
            .values(last_login=datetime.now(UTC))
        )
    return User(username, stored[1])


def role_of(store: Store, username: str, default: str = "viewer") -> str:
    """A known user's role (OIDC users), else `default`."""
    with store.session(readonly=True) as session:
        row = session.get(ConsoleUser, username)
        return row.role if row is not None else default
