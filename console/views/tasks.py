"""Queued and running task instances, the longest waiting first."""

from __future__ import annotations

import streamlit as st

from console import state, why

wanted = st.query_params.get("state", "running")
choice = st.radio(
    "State", ["running", "queued"], index=0 if wanted != "queued" else 1, horizontal=True
)
st.title(f"{choice.capitalize()} task instances")
rows = state.read("problems.active_tasks", choice)
st.caption(f"{len(rows)} shown (at most 200, the longest {choice} first)")
rows.insert(
    0,
    "why",
    [
        why.why_url(d, r, t, map_index=str(m))
        for d, r, t, m in zip(rows.dag_id, rows.run_id, rows.task_id, rows.map_index, strict=True)
    ],
)
st.dataframe(
    rows,
    hide_index=True,
    column_config={
        "why": st.column_config.LinkColumn("why?", display_text="why?"),
        "for_s": st.column_config.NumberColumn(f"{choice} for", format="%.0f s"),
    },
)
st.caption("A task that is not running yet? Open its run on the Why page (why? on each row).")
