"""Alerts: the outbox with each alert's status, route, channel and attempts; what is
pending; delivery success rate and latency per channel; resend (operators). No URL is
ever shown: channels are route names, errors have their URLs masked."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from console import alert_page, state, ui
from console.queries.alerts import WINDOWS

ANY = "(any)"
STATUSES = ("pending", "sent", "failed", "suppressed")
PAGE_SIZE = 100
#: what to read first in the outbox table: which alert, its state, why it failed
OUTBOX_ORDER = (
    "id", "created_at", "event", "status", "channel", "attempts", "last_error", "next_attempt_at",
    "sent_at", "dag_id", "run_id", "task_id", "route", "severity",
)  # fmt: skip

st.title("Alerts")
cols = st.columns([2, 2, 2, 2, 1])
window_name = cols[0].segmented_control(
    "Window", list(WINDOWS), default="24 h", key="alerts_window"
) or "24 h"  # fmt: skip
window, step = WINDOWS[window_name]
wanted = st.query_params.get("status", ANY)
statuses = [ANY, *STATUSES]
status = cols[1].selectbox(
    "Status",
    statuses,
    index=statuses.index(wanted) if wanted in statuses else 0,
    key="alerts_status",
)
route = cols[2].selectbox(
    "Route", [ANY, *state.read("alerts.routes", window=window)], key="alerts_route"
)
dag_id = cols[3].text_input("DAG", value=st.query_params.get("dag_id", ""), key="alerts_dag")
page = int(cols[4].number_input("Page", min_value=1, value=1, step=1, key="alerts_page"))

waiting = state.read("alerts.pending")
delivery = state.read("alerts.delivery", window=window, step=step)
stats = delivery.stats
numbers = st.columns(5)
numbers[0].metric("pending now", int(waiting.pending.sum()))
numbers[1].metric("due now", int(waiting.due_now.sum()))
numbers[2].metric("retrying", int(waiting.retrying.sum()))
attempts = int(stats.attempts.sum())
numbers[3].metric(
    f"delivery attempts ({window_name})", attempts, help="Every attempt of every channel."
)
numbers[4].metric(
    f"accepted ({window_name})",
    ui.fmt(stats.sent.sum() / attempts if attempts else None, ".0%"),
    help="Share of delivery attempts the channel accepted; a timeout is not accepted.",
)

st.subheader("Pending")
if waiting.empty:
    st.caption("Nothing waits for delivery.")
else:
    st.caption("Per channel: waiting alerts, those due now, those retrying after a failure.")
    st.dataframe(waiting, hide_index=True)

st.subheader(f"Delivery per channel, last {window_name}")
if stats.empty:
    st.caption("No delivery attempt in this window.")
else:
    st.dataframe(
        stats,
        hide_index=True,
        column_config={
            "success_rate": st.column_config.NumberColumn("accepted", format="percent"),
            "p50_s": st.column_config.NumberColumn("latency p50 (s)"),
            "p95_s": st.column_config.NumberColumn("latency p95 (s)"),
        },
    )
    end = datetime.now(UTC)
    st.caption(f"One point per {ui.fmt(step.total_seconds() / 60, '.0f')} min of the window.")
    st.altair_chart(alert_page.delivery_charts(delivery.series, end - window, end), width="stretch")

st.subheader("Outbox")
rows = state.read(
    "alerts.outbox",
    window=window,
    status=None if status == ANY else status,
    route=None if route == ANY else route,
    dag_id=dag_id or None,
    limit=PAGE_SIZE,
    offset=(page - 1) * PAGE_SIZE,
)
st.caption(
    f"{len(rows)} alerts created in the last {window_name} on this page, newest first "
    f"(pages of {PAGE_SIZE})."
)
st.dataframe(rows, hide_index=True, column_order=OUTBOX_ORDER)

labels = {
    int(row.id): f"{row.id} · {row.event} · {row.status} · {row.channel}"
    for row in rows.itertuples()
}
if not rows.empty:
    st.subheader("Attempts of an alert")
    chosen = st.selectbox(
        "Alert", list(labels), format_func=labels.__getitem__, key="alerts_chosen"
    )  # fmt: skip
    tried = state.read("alerts.attempts", chosen)
    if tried.empty:
        st.caption("No delivery attempt yet.")
    else:
        st.dataframe(tried, hide_index=True)

st.subheader("Possibly delivered twice")
twice = state.read("problems.possible_duplicates")
if twice.empty:
    st.caption("None in the last 24 h: no delivery was interrupted mid-send.")
else:
    st.caption(
        f"{len(twice)} in the last 24 h: a delivery was interrupted mid-send (the"
        " dispatcher stopped), then retried; the message said it may be a duplicate, and"
        " channels with a dedup key fold it into the first."
    )
    st.dataframe(twice, hide_index=True)

st.subheader("Resend")
user = ui.user()
resendable = [
    int(i) for i, s in zip(rows.id, rows.status, strict=True) if s in alert_page.RESENDABLE
]
if not user.can_act:
    st.caption("You have the viewer role: resending is for operators and admins.")
key = "resend"
ui._show_result(key)
if not resendable:
    st.caption("No failed or suppressed alert on this page.")
else:
    alert_id = st.selectbox(
        "Failed or suppressed alert", resendable, format_func=labels.__getitem__, key="resend_alert"
    )
    resend = st.button("Resend…", key="resend_preview", disabled=not user.can_act)
    if resend and alert_id is not None:
        ui._run_preview(
            key,
            lambda: alert_page.preview_resend(state.store(), alert_id),
            {"alert_id": alert_id},
        )
    if f"{key}_pending" in st.session_state:
        preview, chosen_args = st.session_state[f"{key}_pending"]
        ui._confirm(
            key, preview, lambda: alert_page.resend(state.store(), user, chosen_args["alert_id"])
        )
