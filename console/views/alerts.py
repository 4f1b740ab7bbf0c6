"""Alerts not delivered yet (pending) or given up on (failed); never their URLs."""

from __future__ import annotations

import streamlit as st

from console import state

st.title("Undelivered alerts")
rows = state.read("problems.undelivered_alerts")
st.caption(f"{len(rows)} shown, oldest first. `dagwatch alerts` lists and resends them.")
st.dataframe(rows, hide_index=True)
