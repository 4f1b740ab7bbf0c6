"""Shared fixtures: an isolated DAGWATCH_HOME, its config, and migrated metastores.

`store` runs each test on SQLite and on PostgreSQL. The PostgreSQL database is created once
per session (dagwatch_test_<hex>), migrated once, and emptied before each test. A SQLite
metastore is a copy of a file migrated once per session (`sqlite_template`): running the
Alembic migrations costs far more than copying the few hundred kilobytes they produce.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import insert, text

import metrics
from engine import runtime
from engine.config import Config, load_config
from engine.secrets import get_masker
from engine.store.db import Store
from engine.store.migrate import DEFAULT_POOL, DEFAULT_POOL_SLOTS, migrate
from engine.store.models import Base, Pool
from metrics import Stats
from metrics.testing import MemoryBackend
from tests.helpers import (
    PG_HOST,
    PG_PORT,
    create_pg_database,
    drop_pg_database,
    stop_fork_server,
)

_PASSED_THROUGH = ("PATH", "HOME")


@pytest.fixture(scope="session", autouse=True)
def _cli_fork_server() -> Iterator[None]:
    """`run_cli`'s fork server, if a test started it, ends with the session."""
    yield
    stop_fork_server()


@pytest.fixture(autouse=True)
def _forget_process_state() -> Iterator[None]:
    """Secrets registered for masking and runtime handles must not leak between tests."""
    yield
    get_masker().clear()
    runtime.reset()


@pytest.fixture(autouse=True)
def emitted() -> Iterator[MemoryBackend]:
    """Every metric emitted in this process during the test, through a strict facade: a
    name missing from the catalog or a wrong label set fails the test where it happens."""
    recorder = MemoryBackend()
    metrics.stats.install(Stats([recorder], strict=True))
    yield recorder
    metrics.stats.install(None)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty DAGWATCH_HOME."""
    path = tmp_path / "dagwatch_home"
    path.mkdir()
    return path


@pytest.fixture
def environ(home: Path) -> dict[str, str]:
    """A minimal environment: DAGWATCH_HOME plus PATH/HOME, never the caller's DAGWATCH__*."""
    env = {"DAGWATCH_HOME": str(home)}
    env.update({name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ})
    return env


@pytest.fixture
def config(environ: dict[str, str]) -> Config:
    return load_config(environ)


@pytest.fixture
def cli_env(environ: dict[str, str]) -> dict[str, str]:
    """The environment for `run_cli`: the test's home and a known actor for audit rows."""
    return {**environ, "USER": "dagwatch-test"}


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    try:
        url = create_pg_database()
    except psycopg.Error as exc:
        reason = f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT}: {exc}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        print(reason)
        pytest.skip(reason)
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def _pg_store(pg_url: str) -> Iterator[Store]:
    store = Store(pg_url)
    migrate(store)
    yield store
    store.dispose()


def _empty(store: Store, default_pool_slots: int) -> None:
    """Every table emptied and every sequence restarted, as after `db migrate`. DELETE, not
    TRUNCATE: a test leaves a few rows, and TRUNCATE's new files for every table and index
    cost PostgreSQL four times the CPU (about 100 ms against 20 ms a test)."""
    with store.session() as session:
        sequences = (
            session.execute(
                text(
                    "SELECT quote_ident(sequencename) FROM pg_sequences WHERE schemaname = 'public'"
                )
            )
            .scalars()
            .all()
        )
        for table in reversed(Base.metadata.sorted_tables):  # rows that others refer to last
            session.execute(text(f'DELETE FROM "{table.name}"'))
        for sequence in sequences:
            session.execute(text(f"ALTER SEQUENCE {sequence} RESTART"))
        session.execute(
            insert(Pool).values(
                name=DEFAULT_POOL, slots=default_pool_slots, description="Default pool"
            )
        )


def _configured(store: Store, config: Config) -> Iterator[Store]:
    url = store.url.render_as_string(hide_password=False)
    runtime.configure(config.with_overrides(database__sql_alchemy_conn=url), store)
    try:
        yield store
    finally:
        runtime.reset()


CopyTemplate = Callable[[Path, int], None]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> CopyTemplate:
    """`copy(path, default_pool_slots)`: puts at `path` a SQLite metastore migrated to head.

    Each pool size is migrated once per session (`migrate`, exactly as `dagwatch db migrate`
    does it) into a template file; every caller then gets a copy of that file. The store is
    disposed before the copy, so SQLite has checkpointed its write-ahead log into the file.
    """
    folder = tmp_path_factory.mktemp("sqlite_templates")
    templates: dict[int, Path] = {}

    def copy(path: Path, default_pool_slots: int = DEFAULT_POOL_SLOTS) -> None:
        template = templates.get(default_pool_slots)
        if template is None:
            template = folder / f"migrated_{default_pool_slots}.db"
            store = Store(f"sqlite:///{template}")
            migrate(store, default_pool_slots)
            store.dispose()
            log = template.with_name(f"{template.name}-wal")
            assert not log.exists(), f"{log} was not checkpointed into the template"
            templates[default_pool_slots] = template
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)

    return copy


def _sqlite(config: Config, copy_template: CopyTemplate) -> Store:
    store = Store.from_config(config)  # the default: $DAGWATCH_HOME/dagwatch.db
    slots = config.get("core.default_pool_slots")
    path = Path(store.url.database or ":memory:")
    if path.name == ":memory:" or path.exists():  # nothing to copy over: migrate in place
        migrate(store, slots)
    else:
        copy_template(path, slots)
    return store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(
    request: pytest.FixtureRequest, config: Config, sqlite_template: CopyTemplate
) -> Iterator[Store]:
    """A migrated metastore, SQLite in `home` or the session's PostgreSQL database, emptied."""
    if request.param == "sqlite":
        sqlite_store = _sqlite(config, sqlite_template)
        yield from _configured(sqlite_store, config)
        sqlite_store.dispose()
    else:
        pg_store: Store = request.getfixturevalue("_pg_store")
        _empty(pg_store, config.get("core.default_pool_slots"))
        yield from _configured(pg_store, config)


@pytest.fixture
def sqlite_store(config: Config, sqlite_template: CopyTemplate) -> Iterator[Store]:
    """A migrated SQLite metastore in `home` (for SQLite-specific behaviour)."""
    store = _sqlite(config, sqlite_template)
    yield from _configured(store, config)
    store.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_store(request: pytest.FixtureRequest, home: Path) -> Iterator[Store]:
    """A never-migrated database (a SQLite file or a scratch PostgreSQL database)."""
    if request.param == "sqlite":
        store = Store(f"sqlite:///{home / 'empty.db'}")
        yield store
        store.dispose()
        return
    request.getfixturevalue("pg_url")  # skip or fail exactly like the other PostgreSQL tests
    url = create_pg_database("dagwatch_test_empty")
    store = Store(url)
    try:
        yield store
    finally:
        store.dispose()
        drop_pg_database(url)


# -- the clock of the loops under test -----------------------------------------------------


@pytest.fixture
def fake_clock():  # -> engine.clock.FakeClock (imported here: this block stands alone)
    """A clock moved only by the test (`advance(seconds)`, `set(when)`), starting at
    2026-01-10 12:00 UTC: hand it to a scheduler, dispatcher or service, then advance it
    to make their periodic work due instead of touching their timers."""
    from datetime import UTC, datetime

    from engine.clock import FakeClock

    return FakeClock(datetime(2026, 1, 10, 12, tzinfo=UTC))
