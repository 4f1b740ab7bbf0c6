"""DAG files that could not be imported, with their error."""

from __future__ import annotations

import streamlit as st

from console import state

st.title("Import errors")
rows = state.read("problems.import_errors")
st.caption(f"{len(rows)} broken DAG files")
for row in rows.itertuples():
    with st.expander(f"{row.filename}: {row.error}"):
        st.code(row.stacktrace, language=None)
