"""`/runs?dag_id=...&run_id=...`, the link alerts carry: the DAG page, opened on that run."""

from __future__ import annotations

import streamlit as st

st.switch_page("views/dag.py", query_params=st.query_params.to_dict())
