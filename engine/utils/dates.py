"""`days_ago`, as Airflow 2's `airflow.utils.dates` had it (deprecated there and here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.sdk.compat import deprecated

__all__ = ["days_ago"]


def days_ago(n: int, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0):
    """Today (UTC) at `hour:minute:second`, minus `n` days: an aware UTC datetime.

    Airflow 3 spelling: `pendulum.today("UTC").add(days=-n)`; a fixed date is better
    still as a DAG's start_date.
    """
    deprecated("days_ago(n)", 'a fixed start_date, or pendulum.today("UTC").add(days=-n)')
    today = datetime.now(UTC).replace(
        hour=hour, minute=minute, second=second, microsecond=microsecond
    )
    return today - timedelta(days=n)
