"""Process-wide handles on the configuration and the metastore, set once at the edge.

The CLI, the scheduler and the task runner call `configure`; library code that has no
handle passed in (`Variable.get` inside a task) asks `get_config` / `get_store`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine import masking
from engine.config import Config, load_config

if TYPE_CHECKING:
    from engine.store.db import Store

_lock = threading.RLock()
_config: Config | None = None
_store: Store | None = None
_owns_store = False
#: pools inherited through fork(): referenced so their connections are never closed here
_inherited_pools: list[Any] = []


def configure(
    config: Config, store: Store | None = None, *, environ: Mapping[str, str] | None = None
) -> None:
    """Use this configuration, and this store (default: one built from it on first use).

    A store kept from before is reused only if it points at the same database. The
    secrets this process can know from `config` and `environ` (default: os.environ) are
    masked from now on (`engine.masking.learn_secrets`).
    """
    global _config, _store, _owns_store
    masking.learn_secrets(config, environ)
    with _lock:
        previous, owned = _store, _owns_store
        _config = config
        if store is not None:
            _store, _owns_store = store, False
        elif previous is not None and _url_of(config) != _url_of(previous):
            _store, _owns_store = None, False
        if owned and previous is not None and previous is not _store:
            previous.dispose()
    from engine import hooks
    from engine.sdk.schedules import set_default_timezone

    set_default_timezone(config["core.default_timezone"])  # of naive dates in DAG files
    hooks.install(config)


def detach_after_fork() -> None:
    """In a process just forked from one that used the store: forget it without closing
    its connections (the parent's, sharing their sockets: closing one here would end the
    parent's session). Its pool stays referenced here, never used; the next
    `configure` or `get_store` gives this process its own."""
    global _store, _owns_store
    with _lock:
        if _store is not None:
            _inherited_pools.append(_store.engine.pool)
            _store.engine.dispose(close=False)
        _store, _owns_store = None, False


def _url_of(source: Config | Store) -> str:
    from engine.store.db import normalize_url

    if isinstance(source, Config):
        url = normalize_url(source.get("database.sql_alchemy_conn"))
    else:
        url = source.url
    return url.render_as_string(hide_password=False)


def get_config() -> Config:
    """The configured Config; loaded from os.environ on first use if nobody configured one."""
    global _config
    with _lock:
        if _config is None:
            _config = load_config()
        return _config


def get_store() -> Store:
    """The configured Store; built from `database.sql_alchemy_conn` on first use."""
    global _store, _owns_store
    with _lock:
        if _store is None:
            from engine.store.db import Store

            _store, _owns_store = Store.from_config(get_config()), True
        return _store


def reset() -> None:
    """Forget the configuration and dispose of a store built here (tests)."""
    global _config, _store, _owns_store
    with _lock:
        if _store is not None and _owns_store:
            _store.dispose()
        _config, _store, _owns_store = None, None, False
    from engine import hooks
    from engine.sdk.schedules import set_default_timezone

    set_default_timezone("UTC")
    hooks.uninstall()
