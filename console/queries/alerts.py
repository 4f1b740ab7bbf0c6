"""The Alerts page: the outbox, each alert's delivery attempts, what is pending, and the
delivery success rate and latency of each channel over a window.

A channel is where an alert is delivered one message at a time: its route's name, or
`notifier#<digest>` for an AppriseNotifier used as a callback; never a URL. Error texts
come from the metastore already masked and have any URL reduced to its scheme here too.
Success rate: the share of delivery attempts the channel accepted (a timeout is not a
success). Latency: seconds per attempt, every attempt counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import ColumnElement, case, func, select

from console.queries.common import frame, utcnow
from console.queries.problems import scrub_urls
from engine.store.db import Store
from engine.store.models import Alert, AlertDelivery

#: the windows the page offers, and the width of one point of the chart in each
WINDOWS: dict[str, tuple[timedelta, timedelta]] = {
    "1 h": (timedelta(hours=1), timedelta(minutes=5)),
    "24 h": (timedelta(hours=24), timedelta(hours=1)),
    "7 d": (timedelta(days=7), timedelta(hours=6)),
}
#: the most delivery attempts a window's figures are computed from (the newest ones)
MAX_ATTEMPTS = 20_000
OUTBOX_COLUMNS = (
    "id",
    "created_at",
    "event",
    "severity",
    "route",
    "channel",
    "dag_id",
    "run_id",
    "task_id",
    "status",
    "attempts",
    "next_attempt_at",
    "sent_at",
    "last_error",
)
ATTEMPT_COLUMNS = ("attempt", "at", "status", "latency_s", "error")
PENDING_COLUMNS = ("channel", "pending", "due_now", "retrying", "oldest_created_at", "next_at")
STATS_COLUMNS = (
    "channel",
    "attempts",
    "sent",
    "failed",
    "timeout",
    "success_rate",
    "p50_s",
    "p95_s",
)
SERIES_COLUMNS = ("channel", "start", *STATS_COLUMNS[1:])


def _channel(channel: str | None, route: str | None) -> str:
    return scrub_urls(channel or route or "-")


def outbox(
    store: Store,
    *,
    window: timedelta,
    status: str | None = None,
    route: str | None = None,
    dag_id: str | None = None,
    limit: int = 200,
    offset: int = 0,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Alerts created in the window, newest first, one page of them."""
    query = select(
        Alert.id,
        Alert.created_at,
        Alert.event,
        Alert.severity,
        Alert.route,
        Alert.channel,
        Alert.dag_id,
        Alert.run_id,
        Alert.task_id,
        Alert.status,
        Alert.attempts,
        Alert.next_attempt_at,
        Alert.sent_at,
        Alert.last_error,
    ).where(Alert.created_at >= utcnow(now) - window)
    if status:
        query = query.where(Alert.status == status)
    if route:
        query = query.where(Alert.route == route)
    if dag_id:
        query = query.where(Alert.dag_id == dag_id)
    query = query.order_by(Alert.created_at.desc(), Alert.id.desc()).limit(limit).offset(offset)
    with store.session(readonly=True) as session:
        rows = [
            (*row[:5], _channel(row.channel, row.route), *row[6:13], scrub_urls(row.last_error))
            for row in session.execute(query)
        ]
    return frame(rows, OUTBOX_COLUMNS)


def routes(store: Store, *, window: timedelta, now: datetime | None = None) -> list[str]:
    """The routes of the alerts created in the window (for the route filter)."""
    query = (
        select(Alert.route)
        .where(Alert.created_at >= utcnow(now) - window, Alert.route.is_not(None))
        .group_by(Alert.route)
        .order_by(Alert.route)
        .limit(500)
    )
    with store.session(readonly=True) as session:
        return [route for (route,) in session.execute(query) if route is not None]


def attempts(store: Store, alert_id: int, *, limit: int = 100) -> pd.DataFrame:
    """One alert's delivery attempts in order: outcome, latency and the channel's error."""
    query = (
        select(
            AlertDelivery.attempt,
            AlertDelivery.at,
            AlertDelivery.status,
            AlertDelivery.latency,
            AlertDelivery.error,
        )
        .where(AlertDelivery.alert_id == alert_id)
        .order_by(AlertDelivery.id)
        .limit(limit)
    )
    with store.session(readonly=True) as session:
        rows = [
            (*row[:3], round(row.latency, 3), scrub_urls(row.error))
            for row in session.execute(query)
        ]
    return frame(rows, ATTEMPT_COLUMNS)


def pending(store: Store, *, now: datetime | None = None) -> pd.DataFrame:
    """What waits for delivery, per channel: how many, how many are due now, how many are
    retrying after a failed attempt, the oldest, and when the next attempt is due."""
    now = utcnow(now)
    channel = func.coalesce(Alert.channel, Alert.route, "-")
    query = (
        select(
            channel.label("channel"),
            func.count(),
            func.sum(_flag(Alert.next_attempt_at <= now)),
            func.sum(_flag(Alert.attempts > 0)),
            func.min(Alert.created_at),
            func.min(Alert.next_attempt_at),
        )
        .where(Alert.status == "pending")
        .group_by(channel)
        .order_by(func.count().desc())
        .limit(200)
    )
    with store.session(readonly=True) as session:
        rows = [
            (scrub_urls(name), int(n), int(due or 0), int(retrying or 0), oldest, next_at)
            for name, n, due, retrying, oldest, next_at in session.execute(query)
        ]
    return frame(rows, PENDING_COLUMNS)


def _flag(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """1 where the condition holds, else 0 (a portable SUM of a condition)."""
    return case((condition, 1), else_=0)


def _deliveries(store: Store, since: datetime) -> pd.DataFrame:
    """The window's delivery attempts with their channel, newest first, at most MAX_ATTEMPTS."""
    query = (
        select(
            AlertDelivery.at,
            AlertDelivery.status,
            AlertDelivery.latency,
            func.coalesce(Alert.channel, Alert.route, "-").label("channel"),
        )
        .join(Alert, Alert.id == AlertDelivery.alert_id)
        .where(AlertDelivery.at >= since)
        .order_by(AlertDelivery.at.desc())
        .limit(MAX_ATTEMPTS)
    )
    with store.session(readonly=True) as session:
        found = frame(session.execute(query).all(), ("at", "status", "latency", "channel"))
    names = {name: scrub_urls(name) for name in found["channel"].unique()}
    found["channel"] = found["channel"].map(names)
    return found


def _figures(found: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Attempts, outcomes, success rate and latency p50/p95 per group of `keys`."""
    flags = found.assign(
        sent=found.status.eq("sent"),
        failed=found.status.eq("failed"),
        timeout=found.status.eq("timeout"),
    )
    grouped = flags.groupby(keys)
    figures = grouped[["sent", "failed", "timeout"]].sum().astype(int)
    figures.insert(0, "attempts", grouped.size())
    figures["success_rate"] = (figures.sent / figures.attempts).round(4)
    figures["p50_s"] = grouped.latency.quantile(0.5).round(3)
    figures["p95_s"] = grouped.latency.quantile(0.95).round(3)
    return figures.reset_index()


@dataclass(frozen=True)
class Delivery:
    """A window's delivery figures: per channel, and per channel and step (the chart)."""

    stats: pd.DataFrame
    series: pd.DataFrame


def delivery(
    store: Store, *, window: timedelta, step: timedelta, now: datetime | None = None
) -> Delivery:
    """Per channel over the window (attempts, sent, failed, timed out, success rate,
    latency p50 and p95 in seconds; the busiest channel first), and the same figures per
    channel and per `step` of the window (`start`: the step's beginning), from one read."""
    now = utcnow(now)
    since = now - window
    found = _deliveries(store, since)
    if found.empty:
        return Delivery(frame([], STATS_COLUMNS), frame([], SERIES_COLUMNS))
    stats = _figures(found, ["channel"]).sort_values(
        ["attempts", "channel"], ascending=[False, True]
    )
    at = pd.to_datetime(found["at"], utc=True)
    index = ((at - pd.Timestamp(since)) // pd.Timedelta(step)).astype(int)
    found["start"] = pd.Timestamp(since) + index * pd.Timedelta(step)
    series = _figures(found, ["channel", "start"])
    return Delivery(
        stats[list(STATS_COLUMNS)].reset_index(drop=True),
        series[list(SERIES_COLUMNS)],
    )


def channel_stats(store: Store, *, window: timedelta, now: datetime | None = None) -> pd.DataFrame:
    """`delivery(...).stats`: per channel over the window."""
    return delivery(store, window=window, step=window, now=now).stats


def channel_series(
    store: Store, *, window: timedelta, step: timedelta, now: datetime | None = None
) -> pd.DataFrame:
    """`delivery(...).series`: per channel and per `step` of the window."""
    return delivery(store, window=window, step=step, now=now).series
