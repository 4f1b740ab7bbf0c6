"""Widgets the pages share: the current user, DAG links, the preview-then-confirm panels."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import streamlit as st

from console import actions, auth, state
from console.users import User
from engine.exceptions import DagwatchError

DAG_PAGE = "views/dag.py"


def user() -> User:
    """The user signed in for this session (app.py asks first; a page never runs without)."""
    found = st.session_state.get("current_user") or auth.current_user()
    if found is None:
        st.stop()
    return found


def dag_url(dag_id: str, **params: str) -> str:
    """A deep link to the DAG detail page (relative, so it works behind any prefix)."""
    extra = "".join(f"&{k}={quote(str(v), safe='')}" for k, v in params.items())
    return f"./dag?dag_id={quote(dag_id, safe='')}{extra}"


def _confirm(key: str, preview: actions.Preview, do: Callable[[], str]) -> None:
    """Show the preview; Confirm runs the action, Cancel forgets it."""
    st.info(preview.summary)
    if preview.states:
        st.caption(
            "Task instances (by state): "
            + ", ".join(f"{state} {n}" for state, n in sorted(preview.states.items()))
        )
    for line in preview.blocked:
        st.warning(f"Left alone: {line}")
    left, right = st.columns(2)
    if left.button("Confirm", key=f"{key}_confirm", type="primary"):
        try:
            message = do()
        except DagwatchError as exc:
            st.session_state[f"{key}_result"] = ("error", str(exc))
        else:
            st.session_state[f"{key}_result"] = ("success", message)
            state.forget()
        st.session_state.pop(f"{key}_pending", None)
        st.rerun()
    if right.button("Cancel", key=f"{key}_cancel"):
        st.session_state.pop(f"{key}_pending", None)
        st.rerun()


def _show_result(key: str) -> None:
    result = st.session_state.pop(f"{key}_result", None)
    if result is not None:
        kind, message = result
        (st.success if kind == "success" else st.error)(message)


def _run_preview(key: str, make: Callable[[], actions.Preview], args: dict[str, Any]) -> None:
    try:
        st.session_state[f"{key}_pending"] = (make(), args)
    except DagwatchError as exc:  # bad conf, unknown DAG: one clear line, nothing written
        st.session_state.pop(f"{key}_pending", None)
        st.error(str(exc))


def pause_panel(dag_id: str, paused: bool) -> None:
    """Pause or unpause, previewed."""
    key = f"pause_{dag_id}"
    _show_result(key)
    want = not paused
    label = "Pause" if want else "Unpause"
    if st.button(f"{label} {dag_id}", key=f"{key}_preview", disabled=not user().can_act):
        _run_preview(key, lambda: actions.preview_pause(state.store(), dag_id, want), {})
    if f"{key}_pending" in st.session_state:
        preview, _ = st.session_state[f"{key}_pending"]
        _confirm(
            key,
            preview,
            lambda: (
                f"{dag_id} {'paused' if want else 'unpaused'}"
                if actions.set_paused(state.store(), user(), dag_id, want)
                else f"{dag_id} was already {'paused' if want else 'unpaused'}"
            ),
        )


def trigger_panel(dag_id: str, params: dict[str, Any]) -> None:
    """Trigger with a conf, validated against the DAG's params before anything is written."""
    key = f"trigger_{dag_id}"
    _show_result(key)
    defaults = {name: spec.get("default") for name, spec in params.items()}
    conf_text = st.text_area(
        "Run conf (JSON object)",
        value=_json(defaults),
        key=f"{key}_conf",
        disabled=not user().can_act,
    )
    if st.button(f"Trigger {dag_id}", key=f"{key}_preview", disabled=not user().can_act):

        def make() -> actions.Preview:
            conf = actions.parse_conf(conf_text, params)
            st.session_state[f"{key}_conf_value"] = conf
            return actions.preview_trigger(state.store(), dag_id, conf)

        _run_preview(key, make, {})
    if f"{key}_pending" in st.session_state:
        preview, _ = st.session_state[f"{key}_pending"]
        conf = st.session_state.get(f"{key}_conf_value", {})
        _confirm(
            key,
            preview,
            lambda: "triggered run " + actions.trigger(state.store(), user(), dag_id, conf),
        )


def clear_panel(dag_id: str, run_ids: list[str], task_ids: list[str]) -> None:
    """Clear task instances of a run (or all runs), optionally downstream / only failed."""
    key = f"clear_{dag_id}"
    _show_result(key)
    run_id = st.selectbox("Run", ["(all runs)", *run_ids], key=f"{key}_run")
    task = st.selectbox("Task", ["(all tasks)", *task_ids], key=f"{key}_task")
    downstream = st.checkbox("With downstream tasks", key=f"{key}_downstream")
    only_failed = st.checkbox("Only failed", key=f"{key}_only_failed")
    args: dict[str, Any] = {
        "run_id": None if run_id == "(all runs)" else run_id,
        "task_regex": None if task == "(all tasks)" else f"^{_escape(task)}$",
        "downstream": downstream,
        "only_failed": only_failed,
    }
    if st.button("Clear…", key=f"{key}_preview", disabled=not user().can_act):
        _run_preview(key, lambda: actions.preview_clear(state.store(), dag_id, **args), args)
    if f"{key}_pending" in st.session_state:
        preview, chosen = st.session_state[f"{key}_pending"]
        _confirm(
            key,
            preview,
            lambda: (
                f"cleared {actions.clear(state.store(), user(), dag_id, **chosen)} task instances"
            ),
        )


def mark_panel(dag_id: str, run_ids: list[str]) -> None:
    """Mark one run success or failed, previewed."""
    key = f"mark_{dag_id}"
    _show_result(key)
    if not run_ids:
        st.caption("No run to mark.")
        return
    run_id = st.selectbox("Run", run_ids, key=f"{key}_run")
    target = st.radio("Mark as", ["success", "failed"], horizontal=True, key=f"{key}_state")
    if st.button("Mark…", key=f"{key}_preview", disabled=not user().can_act):
        _run_preview(
            key,
            lambda: actions.preview_mark(state.store(), dag_id, run_id, target),
            {"run_id": run_id, "state": target},
        )
    if f"{key}_pending" in st.session_state:
        preview, chosen = st.session_state[f"{key}_pending"]
        _confirm(
            key,
            preview,
            lambda: (
                f"marked {chosen['run_id']} {chosen['state']} "
                f"({actions.mark(state.store(), user(), dag_id, **chosen)} task instances moved)"
            ),
        )


def _escape(task_id: str) -> str:
    return re.escape(task_id)


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


def no_rights_note() -> None:
    """Tell a viewer why the buttons are greyed out."""
    if not user().can_act:
        st.caption("You have the viewer role: actions are for operators and admins.")


def fmt(value: Any, spec: str = "", missing: str = "-") -> str:
    """A number for a metric, or a dash for a missing one (None or NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return missing
    return format(value, spec)
