"""The Alerts page's queries on the seeded outbox, SQLite and PostgreSQL: exact figures."""

from __future__ import annotations

from datetime import timedelta

import pytest

from console.queries import alerts
from tests.console.seed_alerts import seed_deliveries

DAY = timedelta(hours=24)


@pytest.fixture
def history(seeded):
    return seeded, seed_deliveries(seeded.store, seeded.now)


def test_the_outbox_with_status_route_and_masked_errors(history):
    seeded, ids = history
    rows = alerts.outbox(seeded.store, window=DAY, now=seeded.now)
    assert sorted(rows.id) == sorted(ids.values())
    by_id = rows.set_index("id")
    assert by_id.loc[ids["a1"], ["status", "route", "channel", "attempts"]].tolist() == [
        "pending", "slack", "slack", 1,
    ]  # fmt: skip
    assert by_id.loc[ids["a2"], "last_error"] == "slack://*** 404 from the channel"
    assert "SECRET" not in rows.to_csv() and "XXXXsecret" not in rows.to_csv()
    failed = alerts.outbox(seeded.store, window=DAY, status="failed", now=seeded.now)
    assert list(failed.id) == [ids["a2"]]
    pager = alerts.outbox(seeded.store, window=DAY, route="pager", now=seeded.now)
    assert sorted(pager.id) == sorted([ids["a3"], ids["a4"]])
    assert alerts.outbox(seeded.store, window=DAY, dag_id="nope", now=seeded.now).empty
    # created 30 minutes ago: outside a 20-minute window
    assert alerts.outbox(seeded.store, window=timedelta(minutes=20), now=seeded.now).empty
    assert len(alerts.outbox(seeded.store, window=DAY, limit=3, now=seeded.now)) == 3
    assert alerts.routes(seeded.store, window=DAY, now=seeded.now) == ["pager", "slack"]


def test_attempts_with_error_text_and_latency(history):
    seeded, ids = history
    tried = alerts.attempts(seeded.store, ids["a3"])
    assert tried[["attempt", "status", "latency_s"]].values.tolist() == [
        [1, "timeout", 10.0],
        [2, "sent", 0.5],
    ]
    assert tried.error.iloc[0] == "timeout: no answer within 10.0 s"
    first = alerts.attempts(seeded.store, ids["a1"])
    assert first.error.tolist() == ["HTTP 500 from https://***"]
    assert alerts.attempts(seeded.store, 999_999).empty


def test_pending_per_channel(history):
    seeded, _ids = history
    waiting = alerts.pending(seeded.store, now=seeded.now)
    assert waiting[["channel", "pending", "due_now", "retrying"]].values.tolist() == [
        ["slack", 1, 0, 1]
    ]
    later = alerts.pending(seeded.store, now=seeded.now + timedelta(minutes=6))
    assert later.due_now.tolist() == [1]


def test_success_rate_and_latency_per_channel(history):
    seeded, _ids = history
    stats = alerts.channel_stats(seeded.store, window=DAY, now=seeded.now).set_index("channel")
    assert stats.loc["slack"].to_dict() == {
        "attempts": 4, "sent": 0, "failed": 4, "timeout": 0,
        "success_rate": 0.0, "p50_s": 1.5, "p95_s": 2.85,
    }  # fmt: skip
    assert stats.loc["pager"].to_dict() == {
        "attempts": 3, "sent": 2, "failed": 0, "timeout": 1,
        "success_rate": 0.6667, "p50_s": 0.5, "p95_s": 9.05,
    }  # fmt: skip
    # the last 22 minutes: a1's failure (20 min ago) and a4's delivery (10 min ago) only
    recent = alerts.channel_stats(seeded.store, window=timedelta(minutes=22), now=seeded.now)
    assert recent.set_index("channel")[["attempts", "sent"]].to_dict("index") == {
        "slack": {"attempts": 1, "sent": 0},
        "pager": {"attempts": 1, "sent": 1},
    }
    assert alerts.channel_stats(seeded.store, window=timedelta(minutes=5), now=seeded.now).empty


def test_the_chart_series_buckets_the_window(history):
    seeded, _ids = history
    series = alerts.channel_series(
        seeded.store, window=timedelta(hours=1), step=timedelta(minutes=15), now=seeded.now
    )
    start = seeded.now - timedelta(hours=1)
    got = {
        (row.channel, int((row.start - start).total_seconds() // 60)): (row.attempts, row.sent)
        for row in series.itertuples()
    }
    # slack 29/28/27 min ago -> minutes 31-33 of the hour (step 30-45), 20 -> 40 (30-45)
    # pager 25, 24 -> 35, 36 (30-45); 10 -> 50 (45-60)
    assert got == {("slack", 30): (4, 0), ("pager", 30): (2, 1), ("pager", 45): (1, 1)}
