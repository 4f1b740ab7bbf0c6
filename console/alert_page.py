"""What the Alerts page does beyond reading: resend an alert (previewed, for operators,
through the same `alerts.outbox.resend` as `dagwatch alerts resend`, which writes the
audit row), and its delivery charts."""

from __future__ import annotations

from datetime import UTC, datetime

import altair as alt
import pandas as pd

from alerts import outbox
from console.actions import Preview, require_operator
from console.queries.problems import scrub_urls
from console.users import User
from engine.exceptions import NotFound
from engine.store.db import Store
from engine.store.models import Alert

#: the statuses an operator may resend from the console (a pending alert is on its way)
RESENDABLE = (outbox.FAILED, outbox.SUPPRESSED)


def preview_resend(store: Store, alert_id: int) -> Preview:
    """What Resend will do to this alert."""
    with store.session(readonly=True) as session:
        alert = session.get(Alert, alert_id)
        if alert is None:
            raise NotFound(f"alert {alert_id} does not exist")
        facts = (alert.event, alert.status, alert.attempts, alert.channel or alert.route)
        error, where = scrub_urls(alert.last_error), (alert.dag_id, alert.run_id, alert.task_id)
    event, status, attempts, channel = facts
    about = " / ".join(part for part in where if part) or "no DAG"
    return Preview(
        f"Resends alert {alert_id} ({event}, {about}) to channel {scrub_urls(channel)}: it is "
        f"{status} after {attempts} attempt(s) (last error: {error or 'none'}). It goes back "
        "to pending, due now, with its attempts counted from 0; earlier attempts stay in its "
        "history.",
        {status: 1},
    )


def resend(store: Store, user: User, alert_id: int) -> str:
    """Queue the alert for delivery again (operators and admins), audited."""
    require_operator(user)
    with store.session() as session:
        outbox.resend(session, alert_id, actor=user.name, now=datetime.now(UTC))
    return f"alert {alert_id} queued for delivery"


def delivery_charts(series: pd.DataFrame, start: datetime, end: datetime) -> alt.VConcatChart:
    """Success rate, then latency p50 (solid) and p95 (dashed), per channel over the
    window [start, end]."""
    data = series.rename(columns={"p50_s": "p50", "p95_s": "p95"})
    domain = [start.isoformat(), end.isoformat()]
    base = alt.Chart(data).encode(
        x=alt.X("start:T", title=None, scale=alt.Scale(domain=domain)),
        color=alt.Color("channel:N", title="channel"),
    )
    rate = base.mark_line(point=True).encode(
        y=alt.Y("success_rate:Q", title="accepted", axis=alt.Axis(format="%")),
        tooltip=[
            "channel",
            "start:T",
            "attempts",
            "sent",
            alt.Tooltip("success_rate", format=".0%"),
        ],
    )
    latency = (
        base.transform_fold(["p50", "p95"], as_=["quantile", "seconds"])
        .mark_line(point=True)
        .encode(
            y=alt.Y("seconds:Q", title="latency (s)"),
            strokeDash=alt.StrokeDash("quantile:N", title="latency"),
            tooltip=["channel", "start:T", "quantile:N", "seconds:Q"],
        )
    )
    return alt.vconcat(rate.properties(height=180), latency.properties(height=180))
