"""Alembic environment for the metastore; run through `engine.store.migrate`, not the CLI.

`engine.store.migrate` passes the open connection and the `default_pool_slots` to seed in
`config.attributes`, so migrations use the same engine (and SQLite settings) as dagwatch.
"""

from __future__ import annotations

from alembic import context

from engine.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "dagwatch migrations run programmatically: use `dagwatch db migrate` "
        "or engine.store.migrate.migrate()"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    compare_type=True,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
