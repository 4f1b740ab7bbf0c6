"""SLA misses and missed deadlines in the last 24 h, and runs forecast to miss theirs."""

from __future__ import annotations

import streamlit as st

from console import state

st.title("SLAs and deadlines")
at_risk = state.read("problems.runs_at_risk")
misses = state.read("problems.sla_misses")
st.subheader(f"Runs at risk: {len(at_risk)}")
st.caption("Active runs the forecast expects to finish after their deadline.")
st.dataframe(at_risk, hide_index=True)
st.subheader(f"Misses in the last 24 h: {len(misses)}")
st.dataframe(misses, hide_index=True)
