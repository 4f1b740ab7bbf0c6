"""DAG parsing: parse time per file, DAGs per file, files not parsed recently, import errors."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from console import state


def parse_time_chart(files: pd.DataFrame) -> alt.Chart:
    """Horizontal bars, the slowest file on top; red for a broken or timed-out file."""
    data = files.assign(
        file=files.fileloc.str.rsplit("/", n=1).str[-1],
        problem=files.has_import_error | files.timed_out,
    )
    return (
        alt.Chart(data.head(30))
        .mark_bar()
        .encode(
            x=alt.X("parse_duration_s:Q", title="parse time (s)"),
            y=alt.Y("file:N", sort="-x", title=None),
            color=alt.condition("datum.problem", alt.value("#c62828"), alt.value("#1565c0")),
            tooltip=["fileloc", "parse_duration_s", "dag_count", "task_count", "last_parsed"],
        )
        .properties(height=alt.Step(26))
    )


st.title("Parsing")
config = state.config()
interval = config["scheduler.min_file_process_interval"]
errors = state.read("parsing.import_errors")
intervals = int(
    st.columns(4)[0].number_input(
        "Stale after N x the parse interval",
        min_value=1,
        max_value=1000,
        value=3,
        step=1,
        key="parsing_intervals",
        help=f"scheduler.min_file_process_interval is {interval:g} s",
    )
)
parsed = state.read("parsing.files", interval_s=interval, intervals=intervals)
cols = st.columns(4)
cols[0].metric("import errors", len(errors))
cols[1].metric("files not parsed recently", parsed.stale_files)
cols[2].metric("DAG files", parsed.total_files)
cols[3].metric("parse time, all files", f"{parsed.total_parse_s:.2f} s")
if parsed.last_pass is None:
    st.error("The DAG processor has never run: no DAG file is read (dagwatch dag-processor).")
elif parsed.stale_files:
    st.error(
        f"The DAG processor's last pass was at {parsed.last_pass:%Y-%m-%d %H:%M:%S} UTC, more "
        f"than {parsed.stale_after_s:g} s ago: changes to DAG files are not being picked up."
    )

st.subheader(f"Import errors: {len(errors)}")
for row in errors.itertuples():
    with st.expander(f"{row.filename}: {row.error}", expanded=len(errors) <= 3):
        st.caption(
            f"first seen {row.first_seen:%Y-%m-%d %H:%M:%S} UTC · "
            f"last seen {row.last_seen:%Y-%m-%d %H:%M:%S} UTC"
        )
        st.code(row.stacktrace, language=None)

files = parsed.files
st.subheader("Parse time per file")
if files.empty:
    st.info("No DAG file has been parsed yet.")
else:
    st.caption(
        f"The {len(files)} slowest of {parsed.total_files} files; a file is re-imported when "
        "its content changes, and checked on every pass of the DAG processor."
    )
    st.altair_chart(parse_time_chart(files), width="stretch")
    st.dataframe(
        files,
        hide_index=True,
        column_config={
            "parse_duration_s": st.column_config.NumberColumn("parse time", format="%.3f s"),
            "checked_age_s": st.column_config.NumberColumn("checked", format="%.0f s ago"),
            "stale": st.column_config.CheckboxColumn("not parsed recently"),
        },
    )
