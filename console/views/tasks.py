"""Queued and running task instances, the longest waiting first."""

from __future__ import annotations

import streamlit as st

from console import state

wanted = st.query_params.get("state", "running")
choice = st.radio(
    "State", ["running", "queued"], index=0 if wanted != "queued" else 1, horizontal=True
)
st.title(f"{choice.capitalize()} task instances")
rows = state.read("problems.active_tasks", choice)
st.caption(f"{len(rows)} shown (at most 200, the longest {choice} first)")
st.dataframe(rows, hide_index=True)
