"""Pools and capacity: which limit is binding and what to change, then the figures."""

from __future__ import annotations

import streamlit as st

from console import charts, state
from console.advice import EXECUTOR
from console.queries.capacity import WINDOWS

st.title("Pools and capacity")
parallelism = int(state.config()["core.parallelism"])
windows = list(WINDOWS)
wanted = st.query_params.get("window", "24 h")
window = st.radio(
    "Window", windows, index=windows.index(wanted) if wanted in windows else 1, horizontal=True
)
report = state.read("capacity.report", window, parallelism)
show = {"change": st.warning, "info": st.info, "ok": st.success}
for advice in report.advice:
    show[advice.level](advice.text)

st.subheader("Slots now")
st.caption(
    "Pools count pool_slots; the executor (core.parallelism) counts task instances. Queued"
    " and running hold a slot; scheduled ones wait for one."
)
st.dataframe(state.read("capacity.now_slots", parallelism), hide_index=True)

st.subheader(f"The last {window}")
st.caption(
    "full_%: share of the window with no open slot. wait: seconds from scheduled to queued"
    " of the tries that got a slot in the window. waited_while_full: task-seconds waited"
    " while that limit (and, for the executor, not the task's pool) was full."
)
st.dataframe(report.table(), hide_index=True)
limits = [figures.name for figures in report.figures]
binding = next((a.limit for a in report.advice if a.level == "change"), EXECUTOR)
limit = st.selectbox(
    "Occupancy of", limits, index=limits.index(binding) if binding in limits else 0
)
st.altair_chart(
    charts.capacity_chart(report.chart[report.chart["limit"] == limit]), width="stretch"
)
st.subheader("Waited longest for a slot")
st.dataframe(report.longest, hide_index=True)

config = state.config()
timeout = float(config["scheduler.heartbeat_timeout"])
queues = state.read("workers.queue_capacity", heartbeat_timeout=timeout)
if config["core.executor"] == "celery" or not queues.empty:
    st.subheader("Celery workers and queues")
    st.caption(
        "Per queue: live workers, their slots (a worker's free slots serve each of its"
        " queues), attempts sent and not started (backlog) and how long the oldest has"
        " waited. A queue with a backlog and no worker comes first."
    )
    st.dataframe(queues, hide_index=True)
    st.dataframe(state.read("workers.worker_slots", heartbeat_timeout=timeout), hide_index=True)
