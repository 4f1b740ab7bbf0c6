"""DAG detail (`?dag_id=...`): grid, graph, gantt, durations, logs and XComs, actions."""

from __future__ import annotations

import streamlit as st

from console import charts, state, ui, why
from console.queries import detail

settings = state.settings()
dag_id = st.query_params.get("dag_id", "")
if not dag_id:
    st.title("DAG detail")
    search = st.text_input("DAG id", key="detail_search")
    found = state.read("dags.list_dags", search=search, limit=50).rows
    if found.empty:
        st.info("No DAG matches.")
        st.stop()
    dag_id = st.selectbox("DAG", list(found.dag_id), key="detail_pick")
    st.query_params["dag_id"] = dag_id

info = state.read("detail.dag_info", dag_id)
if info is None:
    st.error(f"There is no DAG {dag_id!r}. Pick one on the DAGs page.")
    st.page_link("views/dags.py", label="DAGs →")
    st.stop()

st.title(dag_id)
next_run = f"{info.next_run:%Y-%m-%d %H:%M} UTC" if info.next_run else "-"
st.caption(
    f"{'PAUSED' if info.paused else 'active'} · schedule {info.schedule or 'None'} · "
    f"owner {info.owner or '-'} · tags {', '.join(info.tags) or '-'} · next run {next_run}"
)
why.dag_header(dag_id, st.query_params.get("run_id"))
before_stack: list = st.session_state.setdefault(f"grid_before_{dag_id}", [])
before = before_stack[-1] if before_stack else None
# only the open tab is drawn (each is a rerun), and ?tab=... opens one from a link
tab_grid, tab_graph, tab_gantt, tab_durations, tab_ti, tab_actions = st.tabs(
    ["Grid", "Graph", "Gantt", "Durations", "Task instance", "Actions"],
    key="tab",
    on_change="rerun",
    bind="query-params",
)


@st.fragment(run_every=settings.refresh_seconds)
def live_grid() -> None:
    data = state.read("detail.grid", dag_id, limit=settings.grid_runs, before=before)
    text, states = detail.grid_table(info, data)
    st.caption(
        f"{len(data.runs)} runs, newest on the left; the first row is the run's state, then "
        "each task's state and try number (#). A mapped task is one row: its instances' "
        "combined state and how many ended; expand it below."
    )
    st.table(charts.style_states(text, states))
    running = state.read("detail.running_tasks", dag_id)
    if not running.empty:
        st.subheader("Running now")
        st.dataframe(running, hide_index=True)


# one read of the grid's page serves the paging, the tabs and the run pickers (the live
# grid re-reads it as it refreshes)
grid = state.read("detail.grid", dag_id, limit=settings.grid_runs, before=before)

if tab_grid.open:
    with tab_grid:
        nav = st.columns([1, 1, 4])
        older = grid.has_older and not grid.runs.empty
        if nav[0].button("◀ Older", key="grid_older", disabled=not older):
            before_stack.append(grid.runs.logical_date.iloc[-1].to_pydatetime())
            st.rerun()
        if nav[1].button("Newer ▶", key="grid_newer", disabled=not before_stack):
            before_stack.pop()
            st.rerun()
        live_grid()
        if info.mapped:
            st.subheader("Mapped tasks")
            cols = st.columns(2)
            mapped_task = cols[0].selectbox("Mapped task", sorted(info.mapped), key="mapped_task")
            mapped_run = cols[1].selectbox("Run", list(grid.runs.run_id), key="mapped_run")
            if mapped_run:
                st.dataframe(
                    state.read("detail.mapped_instances", dag_id, mapped_run, mapped_task),
                    hide_index=True,
                )

runs = grid.runs
run_ids = list(runs.run_id)
wanted_run = st.query_params.get("run_id")
run_index = run_ids.index(wanted_run) if wanted_run in run_ids else 0

if tab_graph.open:
    with tab_graph:
        graph_run = st.selectbox(
            "Colour by run", run_ids or ["-"], index=run_index, key="graph_run"
        )
        tis = grid.task_instances
        states = dict(
            zip(*tis[tis.run_id == graph_run][["task_id", "state"]].values.T, strict=True)
        )
        st.graphviz_chart(charts.graph_dot(info.serialized, states))

if tab_gantt.open:
    with tab_gantt:
        gantt_run = st.selectbox("Run", run_ids or ["-"], index=run_index, key="gantt_run")
        tries = state.read("detail.gantt", dag_id, gantt_run)
        if tries.empty:
            st.info("No try of this run has started yet.")
        else:
            st.caption("Each try: grey while queued, then coloured by its outcome while it ran.")
            with st.container(height=min(600, 140 + 26 * len(tries))):
                st.altair_chart(charts.gantt_chart(tries), width="stretch")

if tab_durations.open:
    with tab_durations:
        durations, stats = state.read("detail.run_durations", dag_id)
        if durations.empty:
            st.info("No finished run yet.")
        else:
            stat_cols = st.columns(3)
            stat_cols[0].metric("median", ui.fmt(stats["median"], ".1f") + " s")
            stat_cols[1].metric("p95", ui.fmt(stats["p95"], ".1f") + " s")
            deadline = info.deadline_seconds
            stat_cols[2].metric("deadline", "none" if deadline is None else f"{deadline:.0f} s")
            st.altair_chart(
                charts.durations_chart(durations, stats, info.deadline_seconds),
                width="stretch",
            )

if tab_ti.open:
    with tab_ti:
        ti_cols = st.columns(4)
        ti_run = ti_cols[0].selectbox("Run", run_ids or ["-"], index=run_index, key="ti_run")
        task_ids = info.task_ids
        wanted_task = st.query_params.get("task_id")
        ti_task = ti_cols[1].selectbox(
            "Task",
            task_ids,
            index=task_ids.index(wanted_task) if wanted_task in task_ids else 0,
            key="ti_task",
        )
        map_index = -1
        if ti_task in info.mapped:
            indexes = list(state.read("detail.mapped_instances", dag_id, ti_run, ti_task).map_index)
            map_index = int(ti_cols[2].selectbox("Map index", indexes or [-1], key="ti_map_index"))
        why.task_instance(dag_id, ti_run, ti_task, map_index)
        tries = state.read("detail.task_tries", dag_id, ti_run, ti_task, map_index)
        if tries.empty:
            st.info("This task instance has not run yet.")
        else:
            numbers = list(tries.try_number)
            try_number = ti_cols[3].selectbox("Try", numbers, index=len(numbers) - 1, key="ti_try")
            chosen = tries[tries.try_number == try_number].iloc[0]
            st.caption(f"try {try_number}: {chosen.state} on {chosen.hostname or '-'}")
            log = detail.read_log(
                chosen.log_path,
                base=state.config()["logging.base_log_folder"],
                dag_id=dag_id,
                run_id=ti_run,
                task_id=ti_task,
                try_number=int(try_number),
                map_index=map_index,
            )
            st.code(log, language=None, height=400)
        st.subheader("Rendered template fields")
        rendered = state.read("detail.rendered_fields", dag_id, ti_run, ti_task, map_index)
        if rendered.empty:
            st.caption("None recorded (the task has no template fields, or has not run).")
        for field in rendered.itertuples():
            st.caption(f"{field.field} (try {field.try_number})")
            st.code(field.value, language=None)
        st.subheader("XComs")
        st.dataframe(
            state.read("detail.xcoms", dag_id, ti_run, ti_task, map_index), hide_index=True
        )

if tab_actions.open:
    with tab_actions:
        ui.no_rights_note()
        left, right = st.columns(2)
        with left:
            st.subheader("Trigger")
            ui.trigger_panel(dag_id, info.params)
            st.subheader("Pause")
            ui.pause_panel(dag_id, info.paused)
        with right:
            st.subheader("Clear")
            ui.clear_panel(dag_id, run_ids, info.task_ids)
            st.subheader("Mark a run")
            ui.mark_panel(dag_id, run_ids)
