"""Why isn't it running? (`/why?dag_id=...&run_id=...&task_id=...&map_index=...`): the
scheduler's own answer for a DAG's next run, a run or a task instance."""

from __future__ import annotations

import streamlit as st

from console import state, ui, why
from engine.exceptions import NotFound

NEXT_RUN = "(its next run)"
WHOLE_RUN = "(the whole run)"

st.title("Why isn't it running?")
params = st.query_params
cols = st.columns([2, 2, 2])
dag_id = cols[0].text_input("DAG id", value=params.get("dag_id", ""), key="why_dag")
if not dag_id:
    st.info("Give a DAG id, or open this page from a queued task or a run.")
    st.stop()
runs = state.read("explain.pick_run", dag_id)
run_ids = [NEXT_RUN, *runs.run_id]
wanted_run = params.get("run_id")
run_id = cols[1].selectbox(
    "Run",
    run_ids,
    index=run_ids.index(wanted_run) if wanted_run in run_ids else 0,
    key="why_run",
    format_func=lambda r: (
        r if r == NEXT_RUN else f"{r} ({runs.set_index('run_id').state.get(r, '?')})"
    ),
)
task_id, map_index = None, None
if run_id != NEXT_RUN:
    tis = state.read("explain.pick_task", dag_id, run_id)
    labels = [WHOLE_RUN] + [
        f"{t}[{m}] ({s})" if m >= 0 else f"{t} ({s})"
        for t, m, s in zip(tis.task_id, tis.map_index, tis.state, strict=True)
    ]
    keys = [(None, None), *((t, int(m)) for t, m in zip(tis.task_id, tis.map_index, strict=True))]
    raw_index = params.get("map_index", "-1")
    wanted = (params.get("task_id"), int(raw_index) if raw_index.lstrip("-").isdigit() else -1)
    chosen = cols[2].selectbox(
        "Task instance",
        range(len(labels)),
        index=keys.index(wanted) if wanted in keys else 0,
        format_func=lambda i: labels[i],
        key="why_task",
    )
    task_id, map_index = keys[chosen]
try:
    if task_id is not None and map_index is not None:
        found = state.read("explain.task", dag_id, run_id, task_id, int(map_index))
    elif run_id != NEXT_RUN:
        found = state.read("explain.run", dag_id, run_id)
    else:
        found = state.read("explain.dag", dag_id)
except NotFound as exc:
    st.error(str(exc))
    st.stop()
why.panel(
    found,
    title=f"{dag_id} · {run_id} · {task_id or 'whole run'}"
    if run_id != NEXT_RUN
    else f"{dag_id} · its next run",
)
st.page_link(ui.DAG_PAGE, label="Open the DAG →", query_params={"dag_id": dag_id})
st.caption(
    "The same answer from the command line: `dagwatch dags failed-deps DAG_ID [RUN_ID]`, "
    "`dagwatch tasks failed-deps DAG_ID RUN_ID TASK_ID`."
)
