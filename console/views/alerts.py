"""Alerts not delivered yet (pending) or given up on (failed); never their URLs."""

from __future__ import annotations

import streamlit as st

from console import state

st.title("Undelivered alerts")
rows = state.read("problems.undelivered_alerts")
st.caption(f"{len(rows)} shown, oldest first. `dagwatch alerts` lists and resends them.")
st.dataframe(rows, hide_index=True)

st.subheader("Possibly delivered twice")
twice = state.read("problems.possible_duplicates")
st.caption(
    f"{len(twice)} in the last 24 h: a delivery was interrupted mid-send (the dispatcher"
    " stopped), then retried; the message said it may be a duplicate, and channels with a"
    " dedup key fold it into the first."
)
st.dataframe(twice, hide_index=True)
