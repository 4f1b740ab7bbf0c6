"""Delivery history for the seeded outbox (tests/console/seed.py): routes, channels and
attempts with known outcomes and latencies, so the Alerts page's figures are exact.

- a1 pending, route `slack`: one failed attempt (an error carrying a webhook URL), retry
  due in 5 minutes;
- a2 failed, route `slack`: three failed attempts (1, 2, 3 s), given up;
- a3 sent, route `pager`: a timeout (10 s), then sent on its retry (0.5 s);
- a4 sent, route `pager`: sent at once (0.3 s).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from engine.store.db import Store
from engine.store.models import Alert, AlertDelivery

HOOK_ERROR = "HTTP 500 from https://hooks.slack.com/services/T0/B0/SECRET-TOKEN"
#: (fingerprint, route, [(minutes ago, status, latency, error)], next attempt in minutes)
HISTORY = {
    "a1": ("slack", [(20, "failed", 0.4, HOOK_ERROR)], 5),
    "a2": (
        "slack",
        [(29, "failed", 1.0, "404"), (28, "failed", 2.0, "404"), (27, "failed", 3.0, "404")],
        None,
    ),
    "a3": (
        "pager",
        [(25, "timeout", 10.0, "timeout: no answer within 10.0 s"), (24, "sent", 0.5, None)],
        None,
    ),
    "a4": ("pager", [(10, "sent", 0.3, None)], None),
}


def seed_deliveries(store: Store, now: datetime) -> dict[str, int]:
    """Give the seeded alerts their routes and delivery attempts; returns fingerprint -> id."""
    with store.session() as session:
        ids = dict(session.execute(select(Alert.fingerprint, Alert.id)).all())
        for key, (route, tries, next_in) in HISTORY.items():
            sent = [now - timedelta(minutes=ago) for ago, status, *_ in tries if status == "sent"]
            session.execute(
                update(Alert)
                .where(Alert.id == ids[key])
                .values(
                    route=route,
                    channel=route,
                    attempts=len(tries),
                    sent_at=sent[-1] if sent else None,
                    last_error=func.coalesce(Alert.last_error, tries[-1][3]),
                    next_attempt_at=None if next_in is None else now + timedelta(minutes=next_in),
                )
            )
            session.add_all(
                AlertDelivery(
                    alert_id=ids[key],
                    attempt=number,
                    at=now - timedelta(minutes=ago),
                    status=status,
                    latency=latency,
                    error=error,
                )
                for number, (ago, status, latency, error) in enumerate(tries, start=1)
            )
    return ids
