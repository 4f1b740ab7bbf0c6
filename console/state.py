"""What the pages share in a Streamlit process: the configuration, one store per
metastore (`st.cache_resource`) and query results cached for a few seconds."""

from __future__ import annotations

import importlib
import os
from typing import Any

import streamlit as st

from console.settings import ConsoleSettings
from engine.config import Config, load_config
from engine.store.db import Store

#: seconds a query's result is reused across reruns and sessions
CACHE_TTL = 2.0


def config() -> Config:
    """The configuration, read from the environment the console was started with."""
    return load_config(os.environ)


def settings() -> ConsoleSettings:
    return ConsoleSettings.from_config(config())


@st.cache_resource(show_spinner=False)
def _store(url: str) -> Store:
    return Store(url)


def store() -> Store:
    """The metastore, one engine (and connection pool) per process."""
    return _store(config()["database.sql_alchemy_conn"])


@st.cache_data(ttl=CACHE_TTL, show_spinner=False, max_entries=512)
def _read(url: str, name: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]) -> Any:
    module, _, function = name.rpartition(".")
    query = getattr(importlib.import_module(f"console.queries.{module}"), function)
    return query(_store(url), *args, **dict(kwargs))


def read(name: str, *args: Any, **kwargs: Any) -> Any:
    """`console.queries.<name>(store, *args, **kwargs)`, cached for CACHE_TTL seconds."""
    url = config()["database.sql_alchemy_conn"]
    return _read(url, name, args, tuple(sorted(kwargs.items())))


def forget() -> None:
    """Drop cached results after an action, so the next read shows its effect."""
    _read.clear()


def variables() -> Any:
    """The variables, masked (not cached: the configuration holds the key to decrypt)."""
    from console.queries import admin

    return admin.variables(store(), config())
