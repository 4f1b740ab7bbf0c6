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
    [  # a queued task: why it does not start; a running one: what else its run waits for
        why.why_url(d, r, t, map_index=str(m)) if choice == "queued" else why.why_url(d, r)
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
st.caption(
    "why? opens the scheduler's answer: for a queued task, why it has not started; for a "
    "running one, what the rest of its run waits for."
)
