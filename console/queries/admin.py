"""Pools and variables, as the admin page shows them: never a secret value."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from console.queries.common import frame
from engine.store import pools as pool_store
from engine.store import variables as variable_store
from engine.store.db import Store

if TYPE_CHECKING:
    from engine.config import Config

POOL_COLUMNS = ("pool", "slots", "running_slots", "queued_slots", "open_slots", "description")
VARIABLE_COLUMNS = ("key", "value", "is_secret", "description")


def pools(store: Store) -> pd.DataFrame:
    """Every pool with its slots in use."""
    with store.session(readonly=True) as session:
        rows = [pool.as_row() for pool in pool_store.list_pools(session)]
    return frame(([row[c] for c in POOL_COLUMNS] for row in rows), POOL_COLUMNS)


def variables(store: Store, config: Config) -> pd.DataFrame:
    """Every variable; a secret one's value shows as ***."""
    with store.session(readonly=True) as session:
        records = variable_store.list_variables(session, config=config)
    rows = (record.as_row(masked=True) for record in records)
    return frame(([row[c] for c in VARIABLE_COLUMNS] for row in rows), VARIABLE_COLUMNS)
