"""The Store: sessions, SQLite tuning, URL handling, clear errors, runtime handles, audit."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from engine import runtime
from engine.exceptions import StoreError
from engine.store import dags
from engine.store.audit import record_audit
from engine.store.db import Store
from engine.store.models import AuditLog, DagFile, Pool


def pool_slots(store: Store, name: str = "default_pool") -> int | None:
    with store.session(readonly=True) as session:
        return session.scalar(select(Pool.slots).where(Pool.name == name))


def test_session_commits_on_success_and_rolls_back_on_error(store):
    with store.session() as session:
        session.add(Pool(name="kept", slots=1, description=""))

    with pytest.raises(RuntimeError), store.session() as session:
        session.add(Pool(name="dropped", slots=1, description=""))
        session.flush()
        raise RuntimeError("boom")

    assert pool_slots(store, "kept") == 1
    assert pool_slots(store, "dropped") is None


def test_objects_stay_readable_after_commit(store):
    with store.session() as session:
        pool = Pool(name="p", slots=3, description="d")
        session.add(pool)

    assert (pool.name, pool.slots) == ("p", 3)  # expire_on_commit=False: no reload needed


def test_sqlite_pragmas_apply_to_every_connection(sqlite_store):
    for _ in range(2):
        with sqlite_store.engine.connect() as connection:
            values = [
                connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            ]
            assert values == ["wal", 1, 30000, 1]  # synchronous=NORMAL is 1
        sqlite_store.dispose()  # the second round gets a brand-new connection


def test_sqlite_parent_folder_is_created(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'a' / 'b' / 'dw.db'}")
    store.ping()
    store.dispose()

    assert (tmp_path / "a" / "b" / "dw.db").exists()


def _increment(store: Store, rounds: int, errors: list[BaseException]) -> None:
    try:
        for _ in range(rounds):
            with store.session() as session:
                slots = session.scalar(select(Pool.slots).where(Pool.name == "counter"))
                time.sleep(0.001)  # widen the read-then-write window
                session.execute(
                    text("UPDATE pool SET slots = :s WHERE name = 'counter'"), {"s": slots + 1}
                )
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def test_concurrent_read_then_write_sessions_neither_lock_out_nor_lose_updates(sqlite_store):
    """BEGIN IMMEDIATE: a write session takes the lock before it reads, so the second waits."""
    with sqlite_store.session() as session:
        session.add(Pool(name="counter", slots=0, description=""))
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_increment, args=(sqlite_store, 25, errors)) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert pool_slots(sqlite_store, "counter") == 100


def test_readonly_session_reads_while_a_writer_holds_the_lock(sqlite_store):
    writing = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with sqlite_store.session() as session:
            session.execute(text("UPDATE pool SET slots = 5 WHERE name = 'default_pool'"))
            writing.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(10)
        started = time.monotonic()
        assert pool_slots(sqlite_store) == 128  # the last committed value, without waiting
        assert time.monotonic() - started < 1
    finally:
        release.set()
        thread.join(10)
    assert pool_slots(sqlite_store) == 5


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@h/d", "postgresql+psycopg"),
        ("postgres://u:p@h/d", "postgresql+psycopg"),
        ("postgresql+psycopg://u:p@h/d", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_urls_are_normalized_to_the_supported_drivers(url, driver):
    store = Store(url)

    assert store.url.drivername == driver
    assert store.dialect == driver.split("+")[0]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "is not a valid SQLAlchemy URL"),
        ("mysql://u:hunter22@h/d", "unsupported database 'mysql'"),
    ],
)
def test_bad_urls_are_store_errors_without_the_password(url, message):
    with pytest.raises(StoreError, match=message) as info:
        Store(url)

    assert "hunter22" not in str(info.value)


def test_unreachable_database_is_a_store_error_naming_the_masked_url():
    store = Store("postgresql://dw:hunter22@127.0.0.1:1/dw")

    with pytest.raises(StoreError) as info, store.session() as session:
        session.execute(text("SELECT 1"))

    message = str(info.value)
    assert message.startswith("cannot connect to the metastore at ")
    assert "postgresql+psycopg://dw:***@127.0.0.1:1/dw" in message
    assert "hunter22" not in message


def test_unmigrated_database_says_to_migrate(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'empty.db'}")

    with pytest.raises(StoreError, match=r"is not migrated .*run `dagwatch db migrate`"):
        with store.session() as session:
            session.execute(select(Pool))
    store.dispose()


def test_record_audit_writes_with_the_callers_transaction(store):
    with store.session() as session:
        record_audit(session, actor="ann", event="pools.set", extra={"pool": "p"})
    with pytest.raises(RuntimeError), store.session() as session:
        record_audit(session, actor="bob", event="pools.delete")
        raise RuntimeError

    with store.session(readonly=True) as session:
        rows = session.scalars(select(AuditLog)).all()
    assert [(row.actor, row.event, row.extra) for row in rows] == [
        ("ann", "pools.set", {"pool": "p"})
    ]
    assert rows[0].at.tzinfo is not None


def test_runtime_builds_a_store_from_the_configured_config(config, home):
    runtime.configure(config)

    store = runtime.get_store()

    assert runtime.get_config() is config
    assert store is runtime.get_store()  # cached
    assert store.url.database == str(home / "dagwatch.db")


def test_runtime_loads_config_from_the_environment_when_nobody_configured(monkeypatch, home):
    monkeypatch.setenv("DAGWATCH_HOME", str(home))
    monkeypatch.setenv("DAGWATCH__CORE__PARALLELISM", "7")

    assert runtime.get_config().get("core.parallelism") == 7


def test_runtime_drops_a_store_built_for_another_database(config, tmp_path):
    runtime.configure(config)
    first = runtime.get_store()

    runtime.configure(config.with_overrides(core__parallelism=3))
    assert runtime.get_store() is first  # same database: kept

    other = config.with_overrides(database__sql_alchemy_conn=f"sqlite:///{tmp_path / 'o.db'}")
    runtime.configure(other)
    assert runtime.get_store() is not first
    assert runtime.get_store().url.database == str(tmp_path / "o.db")


def test_two_dag_processors_recording_the_same_new_files_take_turns(store):
    """Every scheduler runs a DAG processor over the same folder: two passes recording
    files new to both used to insert the same rows twice on PostgreSQL."""
    for round_ in range(5):
        results = [
            dags.FileParseResult(f"/dags/r{round_}_f{i}.py", f"h{i}", 0.1, error="boom")
            for i in range(20)
        ]
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def record(
            barrier: threading.Barrier = barrier, errors: list = errors, results: list = results
        ) -> None:
            barrier.wait(timeout=60)
            try:
                with store.session() as session:
                    dags.record_parse_results(
                        session, results, now=datetime.now(UTC), paused_at_creation=False
                    )
            except BaseException as exc:  # reported below, with the other writer's
                errors.append(exc)

        writers = [threading.Thread(target=record) for _ in range(2)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(timeout=120)
        assert errors == []
        with store.session(readonly=True) as session:
            files = session.scalars(
                select(DagFile.fileloc).where(DagFile.fileloc.like(f"/dags/r{round_}_%"))
            ).all()
        assert len(files) == 20
