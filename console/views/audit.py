"""The audit log: who triggered, cleared, paused, from the CLI or the console."""

from __future__ import annotations

import streamlit as st

from console import state

st.title("Audit log")
cols = st.columns(3)
dag_id = cols[0].text_input("DAG", value=st.query_params.get("dag_id", ""), key="audit_dag")
actor = cols[1].text_input("User", key="audit_actor")
page = int(cols[2].number_input("Page", min_value=1, value=1, step=1, key="audit_page"))
rows = state.read(
    "audit.audit_log",
    dag_id=dag_id or None,
    actor=actor or None,
    limit=100,
    offset=(page - 1) * 100,
)
st.caption(f"{len(rows)} entries on this page, newest first")
st.dataframe(rows, hide_index=True)
