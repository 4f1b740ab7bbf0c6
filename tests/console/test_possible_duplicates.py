"""The console lists the alerts a crash may have delivered twice (last 24 h, newest first)."""

from __future__ import annotations

from datetime import timedelta

from console.queries import problems
from engine.store.models import Alert
from tests.console.test_pages import rendered


def _add(store, key: str, created_at, *, duplicate: bool) -> None:
    with store.session() as session:
        session.add(
            Alert(
                fingerprint=key, event="sla_missed", route="oncall", dag_id="pipeline",
                status="sent", attempts=2, created_at=created_at, sent_at=created_at,
                payload={}, possible_duplicate=duplicate,
            )
        )  # fmt: skip


def test_alerts_possibly_delivered_twice_are_listed(seeded, console_app):
    store, now = seeded.store, seeded.now
    _add(store, "twice-recent", now - timedelta(minutes=5), duplicate=True)
    _add(store, "twice-old", now - timedelta(days=2), duplicate=True)
    _add(store, "once", now - timedelta(minutes=4), duplicate=False)

    twice = problems.possible_duplicates(store, now=now)
    assert len(twice) == 1
    assert (twice.event.iloc[0], twice.status.iloc[0], twice.attempts.iloc[0]) == (
        "sla_missed",
        "sent",
        2,
    )
    assert "possible_duplicate" in problems.undelivered_alerts(store).columns

    app = rendered(console_app("alerts"))
    assert "Possibly delivered twice" in [header.value for header in app.subheader]
    shown = [f.value for f in app.dataframe if list(f.value.columns) == list(twice.columns)]
    assert len(shown) == 1 and list(shown[0].event) == ["sla_missed"]
