"""console.queries against a seeded metastore, without Streamlit (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from console import charts
from console.queries import audit, dags, detail, overview, problems
from engine import api


def test_overview_counts_equal_the_seed(seeded):
    assert overview.counts(seeded.store, now=seeded.now) == seeded.expected


def test_heartbeats_show_each_running_process_with_its_figures(seeded):
    jobs = overview.heartbeats(seeded.store, now=seeded.now).set_index("job_type")
    assert jobs.loc["scheduler", "heartbeat_age_s"] == 3.0
    assert jobs.loc["scheduler", "last_loop_seconds"] == 0.05
    assert (jobs.loc["scheduler", "slots_used"], jobs.loc["scheduler", "slots_open"]) == (2, 30)
    assert jobs.loc["dag_processor", "heartbeat_age_s"] == 20.0


def test_problem_lists_match_the_counts(seeded):
    store, now = seeded.store, seeded.now
    assert list(problems.failed_runs(store, now=now).run_id) == ["r2_failed"]
    failed = problems.failed_tasks(store, now=now)
    assert sorted(failed.task_id) == ["double", "shape.transform"]
    assert list(problems.active_tasks(store, "queued", now=now).task_id) == ["render"]
    running = problems.active_tasks(store, "running", now=now)
    assert list(running.task_id) == ["shape.transform"] and running.for_s.iloc[0] == 240
    assert list(problems.sla_misses(store, now=now).run_id) == ["r2_failed"]
    assert list(problems.runs_at_risk(store, now=now).run_id) == ["r3_running"]
    assert list(problems.import_errors(store).error) == ["SyntaxError: bad"]


def test_undelivered_alerts_never_show_a_notifier_url(seeded):
    alerts = problems.undelivered_alerts(seeded.store)
    assert sorted(alerts.status) == ["failed", "pending"]
    text = alerts.to_string()
    assert "XXXXsecret" not in text and "T000" not in text
    assert alerts.set_index("status").loc["failed", "last_error"] == (
        "slack://*** 404 from the channel"
    )


def test_dag_list_filters_and_recent_runs(seeded):
    store, now = seeded.store, seeded.now
    page = dags.list_dags(store, now=now)
    assert page.total == 2
    rows = page.rows.set_index("dag_id")
    assert rows.loc["pipeline", "owner"] == "data-eng"
    assert rows.loc["pipeline", "tags"] == "etl, prod"
    assert rows.loc["pipeline", "last_runs"] == ["success", "failed", "running"]
    assert rows.loc["pipeline", "failures_24h"] == 2
    assert rows.loc["reports", "schedule"] == "None"
    assert list(dags.list_dags(store, tag="etl", now=now).rows.dag_id) == ["pipeline"]
    assert list(dags.list_dags(store, tag="et", now=now).rows.dag_id) == []
    assert list(dags.list_dags(store, owner="data-eng", now=now).rows.dag_id) == ["pipeline"]
    assert list(dags.list_dags(store, search="REP", now=now).rows.dag_id) == ["reports"]
    assert list(dags.list_dags(store, state="running", now=now).rows.dag_id) == [
        "pipeline",
        "reports",
    ]
    assert list(dags.list_dags(store, state="failed", now=now).rows.dag_id) == []
    paged = dags.list_dags(store, limit=1, offset=1, now=now)
    assert (paged.total, list(paged.rows.dag_id)) == (2, ["reports"])
    options = dags.filter_options(store)
    assert options["tags"] == ["etl", "prod", "reports"]
    assert "data-eng" in options["owners"]


def test_grid_reads_only_the_newest_runs_and_their_task_instances(seeded):
    info = detail.dag_info(seeded.store, "pipeline")
    assert info.task_ids == ["extract", "shape.transform", "double"] and info.mapped == {"double"}
    data = detail.grid(seeded.store, "pipeline", limit=2)
    assert list(data.runs.run_id) == ["r3_running", "r2_failed"] and data.has_older
    assert set(data.task_instances.run_id) == {"r3_running", "r2_failed"}
    text, states = detail.grid_table(info, data, now=seeded.now)
    assert text.loc["shape.transform"].tolist() == ["running #1 240s", "failed #2"]
    assert states.loc["(run)"].tolist() == ["running", "failed"]
    older = detail.grid(seeded.store, "pipeline", limit=2, before=data.runs.logical_date.iloc[-1])
    assert list(older.runs.run_id) == ["r1_ok"] and not older.has_older
    text, states = detail.grid_table(info, older, now=seeded.now)
    assert text.loc["double"].tolist() == ["ok [3/3 mapped]"]
    mapped = detail.mapped_instances(seeded.store, "pipeline", "r1_ok", "double")
    assert list(mapped.map_index) == [0, 1, 2]


def test_a_waiting_sensor_shows_its_next_poke():
    import pandas as pd

    rows = pd.DataFrame(
        [
            (
                "r",
                "s",
                -1,
                "up_for_reschedule",
                1,
                None,
                None,
                None,
                pd.Timestamp("2026-04-10 12:05:07"),
            )
        ],
        columns=detail.TI_COLUMNS,
    )
    now = pd.Timestamp("2026-04-10 12:00", tz="UTC")
    assert detail.cell(list(rows.itertuples(index=False)), now)[0] == (
        "waiting #1 next poke 12:05:07"
    )


def test_gantt_logs_durations_and_xcoms(seeded):
    store = seeded.store
    tries = detail.gantt(store, "pipeline", "r2_failed")
    assert list(tries.task) == ["shape.transform", "shape.transform"]
    assert list(tries.try_number) == [1, 2]
    listed = detail.task_tries(store, "pipeline", "r2_failed", "shape.transform")
    for row in listed.itertuples():
        log = detail.read_log(
            row.log_path,
            base=seeded.log_folder,
            dag_id="pipeline",
            run_id="r2_failed",
            task_id="shape.transform",
            try_number=row.try_number,
        )
        assert f"attempt {row.try_number} log line" in log
    missing = detail.read_log(
        None, base=seeded.log_folder, dag_id="pipeline", run_id="x", task_id="y", try_number=1
    )
    assert missing.startswith("(no log file for try 1")
    durations, stats = detail.run_durations(store, "pipeline")
    assert list(durations.run_id) == ["r1_ok", "r2_failed"]
    assert stats["median"] == (300 + 3600) / 2 and stats["p95"] == 3600
    assert detail.xcoms(store, "pipeline", "r1_ok", "extract").value.tolist() == ['{"rows": 42}']
    rendered = detail.rendered_fields(store, "pipeline", "r2_failed", "shape.transform")
    assert rendered.values.tolist() == [["bash_command", "echo *** 2026-04-10", 2]]
    assert detail.rendered_fields(store, "pipeline", "r1_ok", "extract").empty


def test_graph_has_groups_labels_and_states_quoted(seeded):
    info = detail.dag_info(seeded.store, "pipeline")
    dot = charts.graph_dot(info.serialized, {"extract": "success"})
    assert 'subgraph "cluster_shape"' in dot
    assert '"extract" -> "shape.transform" [label="rows"]' in dot
    assert '"extract" [fillcolor="#2e7d32"' in dot
    evil = {"tasks": [{"task_id": 'a"];x[label="pwn'}], "edges": []}
    assert 'a\\"];x[label=\\"pwn' in charts.graph_dot(evil)


def test_audit_log_lists_actions_newest_first(seeded):
    api.set_paused(seeded.store, "reports", True, actor="alice", now=seeded.now)
    api.set_paused(seeded.store, "reports", False, actor="bob", now=seeded.now + timedelta(1))
    rows = audit.audit_log(seeded.store)
    assert list(rows.actor[:2]) == ["bob", "alice"]
    assert list(audit.audit_log(seeded.store, actor="alice").event) == ["dags.pause"]


def test_the_verdict_names_what_is_wrong(seeded):
    jobs = overview.heartbeats(seeded.store, now=seeded.now)
    figures = overview.counts(seeded.store, now=seeded.now)
    assert overview.verdict(figures, jobs, heartbeat_timeout=30) == [
        "failed runs in 24 h: 1",
        "failed task instances in 24 h: 2",
        "SLA misses in 24 h: 1",
        "runs at risk of missing their deadline: 1",
        "DAG files that do not import: 1",
        "alerts not delivered: 2",
    ]
    assert overview.verdict(figures, jobs, heartbeat_timeout=1)[0] == (
        "the scheduler's heartbeat is 3 s old (timeout 1 s)"
    )
    quiet = dict.fromkeys(figures, 0)
    assert overview.verdict(quiet, jobs, heartbeat_timeout=30) == []
    assert overview.verdict(quiet, jobs.iloc[0:0], heartbeat_timeout=30) == [
        "no scheduler is running: nothing will be scheduled"
    ]


def test_a_timedelta_schedule_reads_every_6h(seeded):
    from engine.store.models import Dag

    with seeded.store.session() as session:
        session.get(Dag, "reports").schedule = "1 day, 6:00:00"  # str(timedelta), as stored
    rows = dags.list_dags(seeded.store, now=seeded.now).rows.set_index("dag_id")
    assert rows.loc["reports", "schedule"] == "every 1d 6h"
    assert detail.dag_info(seeded.store, "reports").schedule == "every 1d 6h"
    assert detail.dag_info(seeded.store, "pipeline").schedule == "@daily"
