"""Failures in a window, grouped by error signature: is this one problem or twenty?"""

from __future__ import annotations

import streamlit as st

from console import state, ui
from console.queries.failures import WINDOWS

st.title("Failures")
windows = list(WINDOWS)
wanted = st.query_params.get("window", "24 h")
window = st.radio(
    "Window",
    windows,
    index=windows.index(wanted) if wanted in windows else 1,
    horizontal=True,
    key="failures_window",
)
figures = state.read("failures.summary", window)
groups = state.read("failures.by_signature", window)
cols = st.columns(3)
cols[0].metric(f"failed tries ({window})", figures["failures"])
cols[1].metric("distinct problems (signatures)", figures["signatures"])
cols[2].metric("DAGs hit", figures["dags"])
if groups.empty:
    st.success(f"No try failed in the last {window}.")
else:
    st.caption(
        "One row per problem: the error with its numbers, ids, paths, quoted values and times "
        "replaced; the most frequent first. A failed try counts, also one that will retry."
    )
    groups.insert(
        0,
        "example",
        [
            ui.dag_url(d, run_id=r, task_id=t, tab="Task instance")
            for d, r, t in zip(
                groups.example_dag_id, groups.example_run_id, groups.example_task_id, strict=True
            )
        ],
    )
    shown = ["failures", "signature", "example", "last_seen", "first_seen", "dags", "tasks"]
    st.dataframe(
        groups[shown],
        hide_index=True,
        column_config={
            "failures": st.column_config.NumberColumn("failures", width="small"),
            "signature": st.column_config.TextColumn("error signature", width="large"),
            "example": st.column_config.LinkColumn(
                "newest", display_text="open log", width="small"
            ),
            "last_seen": st.column_config.DatetimeColumn("last", format="MM-DD HH:mm"),
            "first_seen": st.column_config.DatetimeColumn("first", format="MM-DD HH:mm"),
        },
    )
    st.subheader("Examples")
    for row in groups.head(10).itertuples():
        label = f"{row.failures} failure{'s' if row.failures != 1 else ''}: {row.signature[:120]}"
        with st.expander(label):
            st.caption(
                f"newest: {row.example_dag_id} / {row.example_run_id} / {row.example_task_id}"
                f" try {row.example_try_number}; DAGs: {row.dags}"
            )
            st.code(row.example_error, language=None)
            st.markdown(f"[Open its log →]({row.example})")

runs = state.read("problems.failed_runs")
st.subheader(f"Failed runs (24 h): {len(runs)}")
runs.insert(
    0, "link", [ui.dag_url(d, run_id=r) for d, r in zip(runs.dag_id, runs.run_id, strict=True)]
)
st.dataframe(
    runs,
    hide_index=True,
    column_config={
        "link": st.column_config.LinkColumn("DAG", display_text=r"dag_id=([^&]+)"),
        "dag_id": None,
    },
)
