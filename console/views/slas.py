"""SLAs and deadlines: what will be late, what did not start, what was late."""

from __future__ import annotations

import streamlit as st

from console import state
from console.queries.slas import WINDOWS

st.title("SLAs and deadlines")
config = state.config()
at_risk = state.read(
    "slas.runs_at_risk",
    history=config["alerts.forecast_history"],
    quantile=config["alerts.forecast_quantile"],
    parallelism=config["core.parallelism"],
)
not_started = state.read(
    "slas.not_started",
    grace=float(config["alerts.run_start_grace"]),
    heartbeat_timeout=float(config["scheduler.heartbeat_timeout"]),
    max_active_runs=int(config["core.max_active_runs_per_dag"]),
)
counts = st.container()

st.subheader(f"At risk now: {len(at_risk)}")
st.caption(
    "Active runs the forecast expects to finish after their deadline, predicted again now"
    " along the critical path (a task not started at the p"
    f"{100 * config['alerts.forecast_quantile']:.0f} of its recent durations, a running one"
    " by how long it has already run), and what holds them."
)
st.dataframe(at_risk, hide_index=True)

st.subheader(f"Should have started and did not: {len(not_started)}")
st.caption(
    f"Scheduled runs not created, or runs still queued, {config['alerts.run_start_grace']:g} s"
    " (alerts.run_start_grace) after they were due; each raises run_not_started once."
)
st.dataframe(not_started, hide_index=True)

windows = list(WINDOWS)
wanted = st.query_params.get("window", windows[0])
st.subheader("Misses")
window = st.radio(
    "Misses in the last", windows, index=windows.index(wanted) if wanted in windows else 0,
    horizontal=True,
)  # fmt: skip
misses = state.read("slas.misses", window)
st.caption(
    f"{len(misses)} in the last {window}. late_s: until the task or run ended (or started, for"
    " a run that did not), or now."
)
st.dataframe(misses, hide_index=True)
cols = counts.columns(3)
cols[0].metric("runs at risk", len(at_risk))
cols[1].metric("runs not started", len(not_started))
cols[2].metric(f"misses ({window})", len(misses))
