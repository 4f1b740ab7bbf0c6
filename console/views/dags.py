"""DAGs: every DAG with its schedule, owner, tags, recent runs; filter, pause, trigger."""

from __future__ import annotations

import streamlit as st

from console import charts, state, ui
from console.queries.common import symbol
from console.queries.dags import LAST_RUNS, STATE_FILTERS

PAGE_SIZE = 50
ANY = "(any)"

st.title("DAGs")
options = state.read("dags.filter_options")
cols = st.columns([3, 2, 2, 2, 1])
search = cols[0].text_input("Search DAG id or name", key="dags_search")
tag = cols[1].selectbox("Tag", [ANY, *options["tags"]], key="dags_tag")
owner = cols[2].selectbox("Owner", [ANY, *options["owners"]], key="dags_owner")
wanted = st.query_params.get("state", ANY)
states = [ANY, *STATE_FILTERS]
run_state = cols[3].selectbox(
    "State (newest run)",
    states,
    index=states.index(wanted) if wanted in states else 0,
    key="dags_state",
)
page = int(cols[4].number_input("Page", min_value=1, value=1, step=1, key="dags_page"))
result = state.read(
    "dags.list_dags",
    search=search,
    tag=None if tag == ANY else tag,
    owner=None if owner == ANY else owner,
    state=None if run_state == ANY else run_state,
    limit=PAGE_SIZE,
    offset=(page - 1) * PAGE_SIZE,
)
rows = result.rows
pages = max(1, -(-result.total // PAGE_SIZE))
st.caption(f"{result.total} DAGs match; page {page} of {pages}. Last runs: the newest first.")
rows.insert(0, "open", [ui.dag_url(dag_id) for dag_id in rows.dag_id])
table, run_columns = charts.last_runs_columns(rows, LAST_RUNS)
states = table.copy()
for column in table.columns:
    if column not in run_columns:
        states[column] = ""
table[run_columns] = table[run_columns].map(lambda state: symbol(state) if state else "")
st.dataframe(
    charts.style_states(table, states),
    hide_index=True,
    column_config={
        "open": st.column_config.LinkColumn("DAG", display_text=r"dag_id=([^&]+)"),
        "dag_id": None,
        # `DAG(dag_display_name=...)`: a column only when a DAG of the page has one
        "display_name": st.column_config.TextColumn("name") if rows.display_name.any() else None,
        "last_state": None,
        "paused": st.column_config.CheckboxColumn("paused"),
        "next_run": st.column_config.DatetimeColumn("next run", format="YYYY-MM-DD HH:mm"),
        "failures_24h": st.column_config.NumberColumn("failed tasks 24 h"),
    },
)

if not rows.empty:
    st.subheader("Act on a DAG")
    ui.no_rights_note()
    chosen = st.selectbox("DAG", list(rows.dag_id), key="dags_chosen")
    info = state.read("detail.dag_info", chosen)
    if info is not None:
        left, right = st.columns(2)
        with left:
            ui.pause_panel(chosen, info.paused)
        with right:
            ui.trigger_panel(chosen, info.params)
