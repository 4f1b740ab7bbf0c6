"""The "Why isn't it running?" panel: the scheduler's answer first, then what is in the
way (upstream states, who holds the pool and for how long, the runs in the way)."""

from __future__ import annotations

from urllib.parse import quote

import streamlit as st

from console.queries import explain
from engine.scheduling.explain import Why

Explanation = explain.Explanation


def why_url(dag_id: str, run_id: str | None = None, task_id: str | None = None, **more: str) -> str:
    """A link to the Why page for a DAG, a run or a task instance (relative)."""
    params = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, **more}
    return "./why?" + "&".join(
        f"{key}={quote(str(value), safe='')}" for key, value in params.items() if value is not None
    )


def panel(found: Explanation, *, title: str = "Why isn't it running?") -> None:
    """Draw one answer; red when nothing moves (no scheduler), amber when it waits."""
    st.markdown(f"**{title}** ({found.subject} {found.state})")
    if found.scheduler:
        st.error(found.scheduler)
    if found.blocked:
        st.warning(found.reason)
    else:
        st.info(found.reason)
    if found.details:
        st.markdown("\n".join(f"- {line}" for line in found.details))
    if found.holders:
        st.caption("Holding the pool's slots, the longest first")
        st.dataframe(
            explain.holders(found),
            hide_index=True,
            column_config={"held_s": None, "held": "held for", "map_index": None},
        )
    if found.runs:
        st.caption("Runs in the way")
        runs = explain.runs_in_the_way(found)
        runs.insert(
            0, "why", [why_url(d, r) for d, r in zip(runs.dag_id, runs.run_id, strict=True)]
        )
        st.dataframe(
            runs,
            hide_index=True,
            column_config={
                "why": st.column_config.LinkColumn("run", display_text=r"run_id=([^&]+)"),
                "run_id": None,
                "running_s": None,
                "running": "running for",
            },
        )
    if found.upstream:
        st.caption("Upstream tasks")
        st.dataframe(explain.upstream(found), hide_index=True)
    if found.waiting:
        st.caption(f"Task instances not running: {len(found.waiting)}")
        st.dataframe(explain.waiting(found), hide_index=True)


#: answers a DAG page shows in full; the others (not due yet, running) are one line
_LOUD = frozenset(
    {
        Why.PAUSED,
        Why.INACTIVE,
        Why.RUN_LIMIT,
        Why.QUEUED_BEHIND,
    }
)


def dag_header(dag_id: str, run_id: str | None) -> None:
    """On the DAG page: why the run in the link (or the DAG's next run) is not running."""
    from console import state
    from engine.exceptions import NotFound

    try:
        if run_id:
            found = state.read("explain.run", dag_id, run_id)
        else:
            found = state.read("explain.dag", dag_id)
    except NotFound:
        return
    if found.kind is Why.FINISHED:
        return
    if found.scheduler or found.kind in _LOUD or (run_id and found.blocked):
        with st.container(border=True):
            panel(
                found, title=f"Why isn't {'run ' + run_id if run_id else 'its next run'} running?"
            )
            st.markdown(f"[Open on the Why page →]({why_url(dag_id, run_id)})")
    else:
        st.caption(f"{'Run ' + run_id if run_id else 'Next run'}: {found.reason}")


def task_instance(dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
    """On the task instance tab: why it is not running (nothing for a finished one)."""
    from console import state
    from engine.exceptions import NotFound

    try:
        found = state.read(
            "explain.task", dag_id, run_id, task_id, None if map_index < 0 else map_index
        )
    except NotFound:
        return
    if found.kind is not Why.FINISHED:
        with st.container(border=True):
            panel(found)
