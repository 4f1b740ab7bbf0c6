"""Every page on a seeded metastore through Streamlit's AppTest: it renders, its numbers
are the seeded ones, actions change the metastore and the audit log, viewers cannot act."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from console import actions
from console.users import User
from engine.store.models import AuditLog, Dag, DagRun, TaskInstance

PAGES = [
    "overview", "dags", "dag", "failures", "tasks", "slas", "alerts", "import_errors", "audit",
    "admin",
]  # fmt: skip


def rendered(app):
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def infos(app) -> str:
    return "\n".join(info.value for info in app.info)


def metrics(app) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def audit_rows(store) -> list[tuple[str, str, str | None]]:
    with store.session(readonly=True) as session:
        return list(session.execute(select(AuditLog.event, AuditLog.actor, AuditLog.dag_id)).all())


def count_runs(store, dag_id: str) -> int:
    with store.session(readonly=True) as session:
        return session.execute(
            select(func.count()).select_from(DagRun).where(DagRun.dag_id == dag_id)
        ).scalar_one()


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_an_exception(console_app, page):
    rendered(console_app(page, dag_id="pipeline"))


def test_overview_numbers_equal_the_seed(console_app, seeded):
    app = rendered(console_app("overview"))
    shown = metrics(app)
    labels = {
        "queued": "queued",
        "running": "running",
        "failed tasks (24 h)": "failed_tasks_24h",
        "failed runs (24 h)": "failed_runs_24h",
        "SLA misses (24 h)": "sla_misses_24h",
        "runs at risk": "runs_at_risk",
        "import errors": "import_errors",
        "undelivered alerts": "undelivered_alerts",
    }
    assert {label: int(shown[label]) for label in labels} == {
        label: seeded.expected[key] for label, key in labels.items()
    }
    assert shown["executor slots used"] == "2" and shown["executor slots open"] == "30"
    assert shown["loop duration"] == "0.050 s"
    links = [link.proto.page for link in app.get("page_link")]
    assert any("failures" in page for page in links) and any("slas" in p for p in links)


def test_dags_page_lists_the_seeded_dags(console_app):
    app = rendered(console_app("dags"))
    table = app.dataframe[0].value
    assert sorted(table.dag_id) == ["pipeline", "reports"]
    row = table.set_index("dag_id").loc["pipeline"]
    assert (row["owner"], row["tags"], row["failures_24h"]) == ("data-eng", "etl, prod", 2)
    app.text_input(key="dags_search").input("rep").run()
    assert list(app.dataframe[0].value.dag_id) == ["reports"]


def test_dag_detail_grid_and_log(console_app):
    app = rendered(console_app("dag", dag_id="pipeline", run_id="r2_failed"))
    assert app.title[0].value == "pipeline"
    grid = app.table[0].value
    assert list(grid.index) == ["(run)", "extract", "shape.transform", "double"]
    assert grid.loc["shape.transform"].tolist()[:2][1] == "failed #2"
    app = rendered(console_app("dag", dag_id="pipeline", run_id="r2_failed", tab="Task instance"))
    app.selectbox(key="ti_task").select("shape.transform").run()
    app.selectbox(key="ti_try").select(1).run()
    assert any("attempt 1 log line" in code.value for code in app.code)


def test_an_unknown_dag_is_one_clear_message(console_app):
    app = rendered(console_app("dag", dag_id="nope"))
    assert "There is no DAG 'nope'" in app.error[0].value


def test_trigger_previews_then_writes_the_run_and_the_audit_row(console_app, seeded):
    app = rendered(console_app("dag", dag_id="pipeline", tab="Actions"))
    app.text_area(key="trigger_pipeline_conf").input('{"n": 5}')
    app.button(key="trigger_pipeline_preview").click().run()
    assert "Creates 1 queued run of pipeline with 3 task instances" in infos(app)
    assert count_runs(seeded.store, "pipeline") == 3  # the preview wrote nothing
    app.button(key="trigger_pipeline_confirm").click().run()
    assert not app.exception
    assert count_runs(seeded.store, "pipeline") == 4
    assert ("dags.trigger", "olga", "pipeline") in audit_rows(seeded.store)
    assert any("triggered run manual__" in s.value for s in app.success)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ("{not json", "conf is not valid JSON"),
        ("[1, 2]", "conf must be a JSON object, not list"),
        ('{"n": "five"}', "n"),
    ],
)
def test_a_bad_conf_is_one_message_and_writes_nothing(console_app, seeded, conf, message):
    app = rendered(console_app("dag", dag_id="pipeline", tab="Actions"))
    app.text_area(key="trigger_pipeline_conf").input(conf)
    app.button(key="trigger_pipeline_preview").click().run()
    assert len(app.error) == 1 and message in app.error[0].value
    assert app.button(key="trigger_pipeline_preview") and not [
        b for b in app.button if b.key == "trigger_pipeline_confirm"
    ]
    assert count_runs(seeded.store, "pipeline") == 3 and audit_rows(seeded.store) == []


def test_clear_only_failed_of_one_run(console_app, seeded):
    app = rendered(console_app("dag", dag_id="pipeline", tab="Actions"))
    app.selectbox(key="clear_pipeline_run").select("r2_failed")
    app.checkbox(key="clear_pipeline_only_failed").check()
    app.button(key="clear_pipeline_preview").click().run()
    assert "Clears 2 task instances" in infos(app)
    app.button(key="clear_pipeline_confirm").click().run()
    with seeded.store.session(readonly=True) as session:
        states = dict(
            session.execute(
                select(TaskInstance.task_id, TaskInstance.state).where(
                    TaskInstance.run_id == "r2_failed"
                )
            ).all()
        )
    assert states == {"extract": "success", "shape.transform": "none", "double": "none"}
    assert ("tasks.clear", "olga", "pipeline") in audit_rows(seeded.store)


def test_unpause_from_the_dags_page(console_app, seeded):
    app = rendered(console_app("dags"))
    app.selectbox(key="dags_chosen").select("pipeline").run()
    app.button(key="pause_pipeline_preview").click().run()
    assert "Unpauses pipeline" in infos(app)  # new DAGs start paused
    app.button(key="pause_pipeline_confirm").click().run()
    with seeded.store.session(readonly=True) as session:
        assert not session.get(Dag, "pipeline").is_paused
    assert ("dags.unpause", "olga", "pipeline") in audit_rows(seeded.store)


def test_a_viewer_cannot_act(console_app, seeded):
    app = rendered(console_app("dag", user=("vic", "viewer"), dag_id="pipeline", tab="Actions"))
    preview = app.button(key="trigger_pipeline_preview")
    assert preview.disabled and app.button(key="clear_pipeline_preview").disabled
    assert app.button(key="pause_pipeline_preview").disabled
    assert "viewer role" in " ".join(caption.value for caption in app.caption)
    # the role is checked where the action is done, not only by the disabled buttons
    viewer = User("vic", "viewer")
    with pytest.raises(actions.NotAllowed, match="vic is a viewer"):
        actions.trigger(seeded.store, viewer, "pipeline", {})
    with pytest.raises(actions.NotAllowed):
        actions.set_paused(seeded.store, viewer, "pipeline", False)
    with pytest.raises(actions.NotAllowed):
        actions.clear(
            seeded.store, viewer, "pipeline", run_id=None, task_regex=None, downstream=False,
            only_failed=False,
        )  # fmt: skip
    assert count_runs(seeded.store, "pipeline") == 3 and audit_rows(seeded.store) == []


def test_password_login(console_app, seeded):
    from console import users

    users.create_user(seeded.store, "ops", "operator", "pw-123")
    app = rendered(console_app("overview", user=None))
    assert not app.metric  # nothing but the login form
    app.text_input(key="login_username").input("ops")
    app.text_input(key="login_password").input("wrong")
    app.button[0].click().run()
    assert app.error[0].value == "Wrong username or password." and not app.metric
    app.text_input(key="login_password").input("pw-123")
    app.button[0].click().run()
    assert app.metric and app.session_state["user"] == users.User("ops", "operator")


def test_mark_a_run_success_from_the_page(console_app, seeded):
    app = rendered(console_app("dag", dag_id="pipeline", tab="Actions"))
    app.selectbox(key="mark_pipeline_run").select("r2_failed")
    app.radio(key="mark_pipeline_state").set_value("success")
    app.button(key="mark_pipeline_preview").click().run()
    assert "Marks run r2_failed (failed) success, moving 2 task instances" in infos(app)
    app.button(key="mark_pipeline_confirm").click().run()
    with seeded.store.session(readonly=True) as session:
        state = session.execute(
            select(DagRun.state).where(DagRun.run_id == "r2_failed")
        ).scalar_one()
    assert state == "success"
    assert ("dags.mark_success", "olga", "pipeline") in audit_rows(seeded.store)


def test_admins_set_pools_and_nobody_sees_a_secret_variable(console_app, seeded, config):
    from engine.store import variables
    from engine.store.models import Pool

    with seeded.store.session() as session:
        variables.set_variable(
            session, "db_password", "pa55-w0rd-xyz", is_secret=True, config=config
        )
        variables.set_variable(session, "region", "eu-west", config=config)
    app = rendered(console_app("admin", user=("ada", "admin")))
    shown = app.dataframe[1].value.set_index("key")
    assert shown.loc["db_password", "value"] == "***" and shown.loc["region", "value"] == "eu-west"
    assert "pa55-w0rd-xyz" not in str([element.value for element in app.dataframe])
    app.text_input(key="pool_name").input("etl_pool")
    app.number_input(key="pool_slots").set_value(4)
    next(button for button in app.button if button.label == "Set pool").click().run()
    with seeded.store.session(readonly=True) as session:
        assert session.get(Pool, "etl_pool").slots == 4
    assert ("pools.set", "ada", None) in audit_rows(seeded.store)


def test_operators_cannot_manage_pools(console_app, seeded):
    app = rendered(console_app("admin", user=("olga", "operator")))
    assert all(button.disabled for button in app.button if button.label.startswith("Set "))
    with pytest.raises(actions.NotAllowed, match="only admins"):
        actions.set_pool(seeded.store, User("olga", "operator"), "p", 1, None)


@pytest.mark.parametrize("tab", ["Grid", "Graph", "Gantt", "Durations", "Task instance", "Actions"])
def test_every_tab_of_the_dag_page_renders(console_app, tab):
    app = rendered(console_app("dag", dag_id="pipeline", run_id="r2_failed", tab=tab))
    assert app.title[0].value == "pipeline"


def test_oidc_users_get_the_role_given_to_their_email(console_app, seeded):
    from console import users

    users.create_user(seeded.store, "ops@example.com", "operator", None)
    app = console_app("dag", user=None, auth="oidc", dag_id="pipeline", tab="Actions")
    app.user = {"is_logged_in": False}
    rendered(app)
    assert [b.key for b in app.button] == ["oidc_login"] and not app.title[1:]
    app.user = {"is_logged_in": True, "email": "ops@example.com"}
    rendered(app)
    assert not app.button(key="trigger_pipeline_preview").disabled
    stranger = console_app("dag", user=None, auth="oidc", dag_id="pipeline", tab="Actions")
    stranger.user = {"is_logged_in": True, "email": "someone@example.com"}
    rendered(stranger)
    assert stranger.button(key="trigger_pipeline_preview").disabled  # a viewer


def test_the_link_an_alert_carries_opens_the_dag_page_on_its_run(console_app, config):
    from alerts.routes import run_link

    link = run_link(config, "pipeline", "r2_failed")
    assert link.endswith("/runs?dag_id=pipeline&run_id=r2_failed")
    app = rendered(console_app("runs", dag_id="pipeline", run_id="r2_failed", tab="Gantt"))
    assert app.title[0].value == "pipeline"
    assert app.selectbox(key="gantt_run").value == "r2_failed"
