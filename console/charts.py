"""Charts and diagrams built from query results (no Streamlit: testable as data)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import altair as alt
import pandas as pd

#: node fill per task state in the graph
STATE_COLOURS = {
    "success": "#2e7d32",
    "failed": "#c62828",
    "upstream_failed": "#ef6c00",
    "running": "#1565c0",
    "queued": "#6d4c41",
    "scheduled": "#6a1b9a",
    "up_for_retry": "#f9a825",
    "up_for_reschedule": "#00838f",
    "skipped": "#9e9e9e",
    "removed": "#424242",
}


def _quote(text: str) -> str:
    """A DOT string literal: user text can never break out of it."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def graph_dot(serialized: Mapping[str, Any], states: Mapping[str, str] | None = None) -> str:
    """The DAG as Graphviz DOT: task groups as boxes around their tasks, edge labels,
    nodes filled by their state in one run (when `states` is given)."""
    states = states or {}
    tasks = serialized.get("tasks", [])
    groups: Mapping[str, Any] = serialized.get("task_groups") or {}
    lines = [
        "digraph dag {",
        '  rankdir=LR; node [shape=box, style="rounded,filled", fontname="sans-serif",'
        ' fillcolor="#eceff1", fontsize=11]; edge [fontsize=9];',
    ]
    grouped: dict[str | None, list[str]] = {}
    for task in tasks:
        grouped.setdefault(task.get("task_group") or None, []).append(task["task_id"])

    def node(task_id: str) -> str:
        state = states.get(task_id)
        fill = STATE_COLOURS.get(state or "", "#eceff1")
        font = "white" if state in STATE_COLOURS and state != "up_for_retry" else "black"
        return f"  {_quote(task_id)} [fillcolor={_quote(fill)}, fontcolor={font}];"

    def emit_group(group_id: str | None, depth: int) -> None:
        for child_id, child in sorted(groups.items()):
            if (child.get("parent") or None) == group_id and child_id:
                lines.append(f"  subgraph {_quote('cluster_' + child_id)} {{")
                lines.append(f"  label={_quote(child_id)}; style=dashed; color=gray50;")
                emit_group(child_id, depth + 1)
                lines.append("  }")
        lines.extend(node(task_id) for task_id in grouped.get(group_id, []))

    emit_group(None, 0)
    for edge in serialized.get("edges", []):
        label = f" [label={_quote(edge['label'])}]" if edge.get("label") else ""
        lines.append(f"  {_quote(edge['upstream'])} -> {_quote(edge['downstream'])}{label};")
    lines.append("}")
    return "\n".join(lines)


def gantt_chart(tries: pd.DataFrame) -> alt.LayerChart:
    """One bar per try: queued (light) then running (coloured by outcome)."""
    rows = tries.assign(
        label=tries["task"] + " #" + tries["try_number"].astype(str),
        end=tries["end_date"].fillna(pd.Timestamp.now(tz="UTC")),
    )
    order = list(rows["label"])
    y_axis = alt.Axis(labelLimit=400, title=None)
    x_axis = alt.Axis(format="%H:%M:%S", title="time (UTC)")
    queued = (
        alt.Chart(rows)
        .mark_bar(color="#b0bec5")
        .encode(
            y=alt.Y("label:N", sort=order, axis=y_axis),
            x=alt.X("queued_at:T", axis=x_axis),
            x2="start_date:T",
            tooltip=["task", "try_number", "queued_at", "start_date"],
        )
    )
    running = (
        alt.Chart(rows)
        .mark_bar()
        .encode(
            y=alt.Y("label:N", sort=order, axis=y_axis),
            x=alt.X("start_date:T", axis=x_axis),
            x2="end:T",
            color=alt.Color(
                "state:N",
                scale=alt.Scale(domain=list(STATE_COLOURS), range=list(STATE_COLOURS.values())),
            ),
            tooltip=["task", "try_number", "state", "start_date", "end_date"],
        )
    )
    return (queued + running).properties(height=alt.Step(26))


def durations_chart(
    durations: pd.DataFrame, stats: Mapping[str, float | None], deadline: float | None
) -> alt.LayerChart | alt.FacetChart:
    """Run durations over time, with the median, the p95 and the deadline as lines."""
    base = alt.Chart(durations).encode(x=alt.X("logical_date:T", title="logical date"))
    points = base.mark_point(filled=True, size=50).encode(
        y=alt.Y("duration_s:Q", title="duration (s)"),
        color=alt.Color(
            "state:N",
            scale=alt.Scale(domain=["success", "failed"], range=["#2e7d32", "#c62828"]),
        ),
        tooltip=["run_id", "state", "duration_s"],
    )
    layers: list[Any] = [base.mark_line(color="#90a4ae").encode(y="duration_s:Q"), points]
    lines = {"median": stats.get("median"), "p95": stats.get("p95"), "deadline": deadline}
    colours = {"median": "#1565c0", "p95": "#ef6c00", "deadline": "#c62828"}
    for name, value in lines.items():
        if value is not None:
            rule = pd.DataFrame({"y": [value], "line": [name]})
            layers.append(
                alt.Chart(rule)
                .mark_rule(color=colours[name], strokeDash=[4, 3])
                .encode(y="y:Q", tooltip=["line", "y"])
            )
    return alt.layer(*layers).properties(height=320)


def _css(state: str) -> str:
    colour = STATE_COLOURS.get(state)
    if colour is None:
        return ""
    text = "black" if state == "up_for_retry" else "white"
    return f"background-color: {colour}; color: {text}"


def style_states(text: pd.DataFrame, states: pd.DataFrame) -> Any:
    """`text` with each cell coloured by the state at the same place in `states`."""
    css = states.map(_css)
    css.columns, css.index = text.columns, text.index
    return text.style.apply(lambda _frame: css, axis=None)


def last_runs_columns(rows: pd.DataFrame, width: int) -> tuple[pd.DataFrame, list[str]]:
    """The DAG list with its `last_runs` (states, oldest first) spread over `width`
    columns named by age, the newest first (leftmost, where a wide table is never cut
    off), and those columns' names. A DAG with fewer runs leaves the rest blank."""
    names = [f"run -{age}" if age else "newest" for age in range(width)]
    spread = pd.DataFrame(
        [(list(reversed(states[-width:])) + [""] * width)[:width] for states in rows["last_runs"]],
        columns=names,
        index=rows.index,
    )
    return pd.concat([rows.drop(columns=["last_runs"]), spread], axis=1), names


#: colour per capacity series
CAPACITY_COLOURS = {"wanted": "#ffb74d", "used": "#1565c0", "limit": "#c62828"}


def capacity_chart(points: pd.DataFrame) -> alt.LayerChart | alt.FacetChart:
    """Slots wanted (held or waited for, an area), used (a line) and the limit (dashed)
    per bucket of a window: where the area rises above the dashed line, tasks waited."""
    colour = alt.Color(
        "series:N",
        scale=alt.Scale(domain=list(CAPACITY_COLOURS), range=list(CAPACITY_COLOURS.values())),
        title=None,
    )
    x = alt.X("at:T", title="time (UTC)")
    y = alt.Y("slots:Q", title="slots (peak per point)")
    tooltip = ["series", "at:T", "slots"]
    base = alt.Chart(points)
    wanted = (
        base.transform_filter(alt.datum.series == "wanted")
        .mark_area(interpolate="step-after", opacity=0.6)
        .encode(x=x, y=y, color=colour, tooltip=tooltip)
    )
    used = (
        base.transform_filter(alt.datum.series == "used")
        .mark_line(interpolate="step-after")
        .encode(x=x, y=y, color=colour, tooltip=tooltip)
    )
    limit = (
        base.transform_filter(alt.datum.series == "limit")
        .mark_line(strokeDash=[5, 4])
        .encode(x=x, y=y, color=colour, tooltip=tooltip)
    )
    return alt.layer(wanted, used, limit).properties(height=260)
