"""Overview: is dagwatch alive, how busy is it, what failed, what is late."""

from __future__ import annotations

import streamlit as st

from console import state, ui
from console.queries import overview

settings = state.settings()
st.title("Overview")


def _number(column, label: str, value: object, page: str, link: str, **params: str) -> None:
    column.metric(label, value)
    column.page_link(page, label=link, query_params=params or None)


@st.fragment(run_every=settings.refresh_seconds)
def live() -> None:
    counts = state.read("overview.counts")
    jobs = state.read("overview.heartbeats")
    problems = overview.verdict(
        counts, jobs, heartbeat_timeout=state.config()["scheduler.heartbeat_timeout"]
    )
    if problems:
        st.error("  \n".join(f"**{problem}**" for problem in problems))
    else:
        st.success("All well: the scheduler is alive and nothing failed in the last 24 h.")
    st.subheader("Processes")
    for job in jobs.itertuples():
        cols = st.columns(4)
        cols[0].metric(f"{job.job_type} heartbeat age", f"{job.heartbeat_age_s:.0f} s")
        loop_label = "loop duration" if job.job_type == "scheduler" else "last parse pass"
        cols[1].metric(loop_label, ui.fmt(job.last_loop_seconds, ".3f") + " s")
        if job.job_type == "scheduler":
            cols[2].metric("executor slots used", ui.fmt(job.slots_used, ".0f"))
            cols[3].metric("executor slots open", ui.fmt(job.slots_open, ".0f"))
        st.caption(f"{job.job_type} pid {job.pid} on {job.hostname}")
    st.subheader("Work")
    cols = st.columns(4)
    _number(cols[0], "queued", counts["queued"], "views/tasks.py", "queued tasks →", state="queued")
    _number(
        cols[1], "running", counts["running"], "views/tasks.py", "running tasks →", state="running"
    )
    _number(
        cols[2], "failed tasks (24 h)", counts["failed_tasks_24h"], "views/failures.py", "which →"
    )
    _number(
        cols[3], "failed runs (24 h)", counts["failed_runs_24h"], "views/failures.py", "which →"
    )
    st.subheader("Late and broken")
    cols = st.columns(4)
    _number(cols[0], "SLA misses (24 h)", counts["sla_misses_24h"], "views/slas.py", "which →")
    _number(cols[1], "runs at risk", counts["runs_at_risk"], "views/slas.py", "which →")
    _number(cols[2], "import errors", counts["import_errors"], "views/import_errors.py", "which →")
    _number(
        cols[3], "undelivered alerts", counts["undelivered_alerts"], "views/alerts.py", "which →"
    )


live()
