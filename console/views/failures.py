"""Failures in the last 24 h: the runs and the task instances, newest first."""

from __future__ import annotations

import streamlit as st

from console import state, ui

st.title("Failures in the last 24 h")
runs = state.read("problems.failed_runs")
tasks = state.read("problems.failed_tasks")
link = st.column_config.LinkColumn("DAG", display_text=r"dag_id=([^&]+)")
st.subheader(f"Failed runs: {len(runs)}")
runs.insert(
    0, "link", [ui.dag_url(d, run_id=r) for d, r in zip(runs.dag_id, runs.run_id, strict=True)]
)
st.dataframe(runs, hide_index=True, column_config={"link": link, "dag_id": None})
st.subheader(f"Failed task instances: {len(tasks)}")
tasks.insert(
    0, "link", [ui.dag_url(d, run_id=r) for d, r in zip(tasks.dag_id, tasks.run_id, strict=True)]
)
st.dataframe(tasks, hide_index=True, column_config={"link": link, "dag_id": None})
