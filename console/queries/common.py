"""Shared pieces of the queries: the clock, states as symbols, frames from rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

#: a short word per state for grid cells (the colour comes from charts.STATE_COLOURS)
STATE_WORDS = {
    "success": "ok",
    "failed": "failed",
    "upstream_failed": "upstream",
    "running": "running",
    "queued": "queued",
    "scheduled": "sched",
    "up_for_retry": "retry",
    "up_for_reschedule": "waiting",
    "skipped": "skipped",
    "removed": "removed",
    "none": "none",
}


def symbol(state: str | None) -> str:
    """The short word for a state in a grid cell."""
    return STATE_WORDS.get(state or "none", state or "none")


def utcnow(now: datetime | None = None) -> datetime:
    """`now`, or the clock, as aware UTC."""
    return (now or datetime.now(UTC)).astimezone(UTC)


def frame(rows: Iterable[Any], columns: Sequence[str]) -> pd.DataFrame:
    """A DataFrame with these columns even when there are no rows."""
    return pd.DataFrame([tuple(row) for row in rows], columns=list(columns))


def seconds_between(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((later - earlier).total_seconds(), 3)
