"""Schema management: upgrade to head, reset, and check that the database matches models.py.

Alembic runs programmatically (there is no alembic.ini): the migrations folder ships inside
the package and gets the store's own connection, so SQLite settings apply to migrations too.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, inspect, select, text

from engine.exceptions import StoreError
from engine.store.db import Store
from engine.store.models import Base, Pool

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
DEFAULT_POOL = "default_pool"
DEFAULT_POOL_SLOTS = 128
#: pg_advisory_xact_lock key, so two `db migrate` at once run one after the other.
_PG_LOCK_KEY = 0x64616777


def _alembic_config(connection: Connection | None = None, **attributes: Any) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    config.attributes.update(attributes)
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of dagwatch."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise StoreError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def _serialize(connection: Connection) -> None:
    # SQLite needs nothing: the store's write transactions begin with BEGIN IMMEDIATE.
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


def migrate(store: Store, default_pool_slots: int = DEFAULT_POOL_SLOTS) -> str:
    """Upgrade the schema to head (a no-op when it is there already); returns the revision."""
    with store.connect() as connection:
        _serialize(connection)
        config = _alembic_config(connection, default_pool_slots=default_pool_slots)
        command.upgrade(config, "head")
    return head_revision()


def reset(store: Store, default_pool_slots: int = DEFAULT_POOL_SLOTS) -> str:
    """Drop every table in the database (alembic_version too), then migrate from scratch."""
    with store.connect() as connection:
        _serialize(connection)
        existing = MetaData()
        existing.reflect(connection)
        existing.drop_all(connection)
    return migrate(store, default_pool_slots)


def current_revision(store: Store) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    with store.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check(store: Store) -> list[str]:
    """What is wrong with the metastore, one sentence each; an empty list means it is fine."""
    try:
        current = current_revision(store)
    except StoreError as exc:
        return [str(exc)]
    if current is None:
        return [f"{store.display_url} is not migrated: run `dagwatch db migrate`"]
    head = head_revision()
    if current != head:
        return [
            f"{store.display_url} is at revision {current}, this dagwatch needs {head}: "
            "run `dagwatch db migrate`"
        ]
    with store.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": _comparable}
        )
        with warnings.catch_warnings():
            # expression indexes are checked by name below
            warnings.filterwarnings("ignore", "autogenerate skipping .*expression-based index")
            diffs = compare_metadata(context, Base.metadata)
        problems = [f"schema drift: {_describe(diff)}" for diff in diffs]
        problems += _missing_expression_indexes(connection)
        if connection.execute(select(Pool.name).where(Pool.name == DEFAULT_POOL)).first() is None:
            problems.append(f"{DEFAULT_POOL} is missing: run `dagwatch pools set {DEFAULT_POOL} N`")
    return problems


def _expression_indexes() -> dict[str, str]:
    """index name -> table, for the models' indexes over expressions (`priority_weight
    DESC`), which autogenerate can only approximate: they are checked by name instead."""
    return {
        index.name: table.name
        for table in Base.metadata.tables.values()
        for index in table.indexes
        if index.name is not None
        and any(not hasattr(expression, "table") for expression in index.expressions)
    }


def _comparable(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    return not (type_ == "index" and name in _expression_indexes())


def _missing_expression_indexes(connection: Any) -> list[str]:
    inspector = inspect(connection)
    return [
        f"schema drift: add_index {name} on {table}"
        for name, table in _expression_indexes().items()
        if name not in {index["name"] for index in inspector.get_indexes(table)}
    ]


def _describe(diff: Any) -> str:
    """One autogenerate difference in words: ("add_index", Index) or a list of modify_*."""
    if isinstance(diff, list):
        return "; ".join(_describe_modify(item) for item in diff)
    operation, *rest = diff
    if operation in ("add_column", "remove_column"):
        _schema, table_name, column = rest
        return f"{operation} {table_name}.{column.name}"
    subject = rest[0]
    table = getattr(subject, "table", None)
    where = f" on {table.name}" if table is not None and operation != "add_table" else ""
    return f"{operation} {getattr(subject, 'name', None) or subject}{where}"


def _describe_modify(item: tuple[Any, ...]) -> str:
    operation, _schema, table, column, _info, existing, wanted = item
    return f"{operation} {table}.{column}: database has {existing}, models.py has {wanted}"
