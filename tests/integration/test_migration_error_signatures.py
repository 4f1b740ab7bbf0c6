"""Migration 0007: recent failed tries get their error signature, import errors their
first sighting; older tries keep none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from engine.store import migrate as migrations
from engine.store.error_signature import signature


def test_upgrade_signs_the_last_weeks_errors_and_dates_import_errors(empty_store):
    from alembic import command

    recent = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S+00:00")
    old = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S+00:00")
    with empty_store.connect() as connection:
        command.upgrade(migrations._alembic_config(connection, default_pool_slots=8), "0005")
        connection.execute(
            text(
                "INSERT INTO dag_run (dag_id, run_id, run_type, state, logical_date, conf,"
                " external_trigger) VALUES ('d', 'r', 'manual', 'failed', :at, '{}', false)"
            ),
            {"at": recent},
        )
        connection.execute(
            text(
                "INSERT INTO task_instance (id, dag_id, run_id, task_id, map_index, state,"
                " try_number, max_tries, pool, pool_slots, priority_weight, queue)"
                " VALUES (1, 'd', 'r', 't', -1, 'failed', 3, 3, 'default_pool', 1, 1, 'default')"
            )
        )
        for number, (end, error) in enumerate(
            [
                (recent, "ValueError: no rows for 2026-04-10"),
                (recent, None),
                (old, "KeyError: 'a'"),
            ],
            start=1,
        ):
            connection.execute(
                text(
                    "INSERT INTO task_try (ti_id, dag_id, run_id, task_id, map_index, try_number,"
                    " state, end_date, error) VALUES (1, 'd', 'r', 't', -1, :n, 'failed', :end,"
                    " :error)"
                ),
                {"n": number, "end": end, "error": error},
            )
        connection.execute(
            text(
                "INSERT INTO import_error (filename, timestamp, stacktrace)"
                " VALUES ('/dags/x.py', :at, 'SyntaxError: bad')"
            ),
            {"at": recent},
        )

    migrations.migrate(empty_store)

    assert migrations.check(empty_store) == []
    with empty_store.session() as session:
        rows = session.execute(
            text("SELECT try_number, error_signature FROM task_try ORDER BY try_number")
        ).all()
        seen = session.execute(text("SELECT first_seen, timestamp FROM import_error")).one()
    assert [tuple(row) for row in rows] == [
        (1, signature("ValueError: no rows for 2026-04-10")),
        (2, None),
        (3, None),
    ]
    assert seen[0] is not None and seen[0] == seen[1]
