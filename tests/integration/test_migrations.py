"""Migrations: an empty database becomes exactly models.py's schema, repeatably."""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath

from sqlalchemy import inspect, select, text

from engine.store import migrate as migrations
from engine.store.db import Store
from engine.store.models import Base, Pool, Variable

ROOT = Path(__file__).resolve().parents[2]


def pools(store: Store) -> list[tuple[str, int, str]]:
    with store.session(readonly=True) as session:
        return [
            tuple(row) for row in session.execute(select(Pool.name, Pool.slots, Pool.description))
        ]


def test_empty_database_is_reported_as_not_migrated(empty_store):
    assert migrations.current_revision(empty_store) is None
    problems = migrations.check(empty_store)

    assert len(problems) == 1
    assert "is not migrated: run `dagwatch db migrate`" in problems[0]


def test_migrate_creates_exactly_the_models_schema_with_no_drift(empty_store):
    revision = migrations.migrate(empty_store, default_pool_slots=7)

    assert revision == migrations.head_revision() == migrations.current_revision(empty_store)
    tables = set(inspect(empty_store.engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert migrations.check(empty_store) == []
    assert pools(empty_store) == [("default_pool", 7, "Default pool")]


def test_indexes_and_constraints_follow_the_naming_convention(empty_store):
    migrations.migrate(empty_store)
    inspector = inspect(empty_store.engine)

    index_names = {index["name"] for index in inspector.get_indexes("task_instance")}
    unique_names = {uq["name"] for uq in inspector.get_unique_constraints("task_instance")}
    foreign_keys = inspector.get_foreign_keys("task_instance")
    assert {"ix_task_instance_state_pool", "ix_task_instance_dag_id_state"} <= index_names
    assert unique_names == {"uq_task_instance_dag_id_run_id_task_id_map_index"}
    assert [fk["name"] for fk in foreign_keys] == ["fk_task_instance_dag_id_run_id_dag_run"]
    assert foreign_keys[0]["options"].get("ondelete") == "CASCADE"


def test_migrate_is_idempotent_and_keeps_data(empty_store):
    migrations.migrate(empty_store, default_pool_slots=7)
    with empty_store.session() as session:
        session.add(Pool(name="mine", slots=2, description=""))

    assert migrations.migrate(empty_store, default_pool_slots=99) == migrations.head_revision()

    assert sorted(pools(empty_store)) == [("default_pool", 7, "Default pool"), ("mine", 2, "")]
    with empty_store.session(readonly=True) as session:
        versions = session.execute(text("SELECT version_num FROM alembic_version")).all()
    assert versions == [(migrations.head_revision(),)]


def test_reset_drops_data_and_unknown_tables_then_migrates(empty_store):
    migrations.migrate(empty_store)
    with empty_store.session() as session:
        session.add(Pool(name="mine", slots=2, description=""))
        session.add(Variable(key="k", val=b"x", is_secret=False))
        session.execute(text("CREATE TABLE leftover (x INTEGER)"))

    migrations.reset(empty_store, default_pool_slots=5)

    assert pools(empty_store) == [("default_pool", 5, "Default pool")]
    assert "leftover" not in inspect(empty_store.engine).get_table_names()
    assert migrations.check(empty_store) == []


def test_check_reports_schema_drift(empty_store):
    migrations.migrate(empty_store)
    with empty_store.session() as session:
        session.execute(text("DROP INDEX ix_dag_run_state_dag_id"))
        session.execute(text("DROP INDEX ix_task_instance_queue_order"))  # over an expression
        session.execute(text("ALTER TABLE pool ADD COLUMN color VARCHAR(10)"))

    problems = migrations.check(empty_store)

    assert "schema drift: add_index ix_dag_run_state_dag_id on dag_run" in problems
    assert "schema drift: add_index ix_task_instance_queue_order on task_instance" in problems
    assert "schema drift: remove_column pool.color" in problems


def test_check_reports_a_missing_default_pool(empty_store):
    migrations.migrate(empty_store)
    with empty_store.session() as session:
        session.execute(text("DELETE FROM pool"))

    assert migrations.check(empty_store) == [
        "default_pool is missing: run `dagwatch pools set default_pool N`"
    ]


def test_check_reports_a_database_behind_head(empty_store):
    migrations.migrate(empty_store)
    with empty_store.session() as session:
        session.execute(text("UPDATE alembic_version SET version_num = '0000'"))

    problems = migrations.check(empty_store)

    assert len(problems) == 1
    assert f"is at revision 0000, this dagwatch needs {migrations.head_revision()}" in problems[0]


def test_upgrade_from_0001_keeps_alerts_and_adds_delivery_records(empty_store):
    from alembic import command

    with empty_store.connect() as connection:
        command.upgrade(migrations._alembic_config(connection, default_pool_slots=8), "0001")
        connection.execute(
            text(
                "INSERT INTO alert (fingerprint, event, severity, payload, status, attempts,"
                " created_at) VALUES ('f1', 'task_failed', 'error', '{}', 'pending', 0,"
                " '2026-01-01 00:00:00+00:00')"
            )
        )

    migrations.migrate(empty_store)

    assert migrations.check(empty_store) == []
    with empty_store.session() as session:
        rows = session.execute(text("SELECT fingerprint, count, group_key FROM alert")).all()
        deliveries = session.execute(text("SELECT count(*) FROM alert_delivery")).scalar_one()
    assert [tuple(row) for row in rows] == [("f1", 1, None)]
    assert deliveries == 0


def test_check_reports_an_unreachable_database():
    problems = migrations.check(Store("postgresql://dw:hunter22@127.0.0.1:1/dw"))

    assert len(problems) == 1
    assert problems[0].startswith("cannot connect to the metastore at postgresql+psycopg://dw:***@")


def test_package_data_ships_every_migration_file():
    """A wheel without these files could not migrate: pyproject's patterns must cover them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["engine.store"]
    package = ROOT / "engine" / "store"
    shipped = [
        path.relative_to(package).as_posix()
        for path in migrations.MIGRATIONS_DIR.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]

    assert {"migrations/env.py", "migrations/script.py.mako"} <= set(shipped)
    assert any(name.startswith("migrations/versions/") for name in shipped)
    assert [name for name in shipped if not any(_glob_matches(name, p) for p in patterns)] == []


def _glob_matches(name: str, pattern: str) -> bool:
    """setuptools' glob: `*` never crosses a `/`."""
    path, glob = PurePosixPath(name), PurePosixPath(pattern)
    return len(path.parts) == len(glob.parts) and path.match(pattern)
