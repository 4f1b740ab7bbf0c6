"""The Alerts page through AppTest on the seeded outbox and its delivery history: exact
figures, nothing secret, a viewer cannot resend, an operator's resend changes the outbox
and writes the audit row."""

from __future__ import annotations

from sqlalchemy import select

from engine.store.models import Alert, AuditLog
from tests.console.seed_alerts import seed_deliveries
from tests.console.test_pages import infos, metrics, rendered


def _page(console_app, seeded, user=("olga", "operator"), **params):
    ids = seed_deliveries(seeded.store, seeded.now)
    return rendered(console_app("alerts", user=user, **params)), ids


def test_figures_tables_and_attempts(console_app, seeded):
    app, ids = _page(console_app, seeded)
    assert app.title[0].value == "Alerts"
    shown = metrics(app)
    assert {k: shown[k] for k in ("pending now", "due now", "retrying")} == {
        "pending now": "1",
        "due now": "0",
        "retrying": "1",
    }
    assert shown["delivery attempts (24 h)"] == "7" and shown["accepted (24 h)"] == "29%"
    tables = {tuple(table.value.columns)[:2]: table.value for table in app.dataframe}
    waiting = tables[("channel", "pending")]
    assert waiting[["channel", "pending"]].values.tolist() == [["slack", 1]]
    stats = tables[("channel", "attempts")].set_index("channel")
    assert stats.loc["pager", ["attempts", "sent", "p95_s"]].tolist() == [3, 2, 9.05]
    outbox = tables[("id", "created_at")]
    assert sorted(outbox.id) == sorted(ids.values())
    everything = "".join(table.value.to_csv() for table in app.dataframe)
    assert "SECRET" not in everything and "XXXXsecret" not in everything
    app.selectbox(key="alerts_chosen").select(ids["a3"]).run()
    tried = next(t.value for t in app.dataframe if "attempt" in t.value.columns)
    assert tried[["attempt", "status", "latency_s"]].values.tolist() == [
        [1, "timeout", 10.0],
        [2, "sent", 0.5],
    ]
    app.selectbox(key="alerts_status").select("failed").run()
    outbox = next(t.value for t in app.dataframe if "last_error" in t.value.columns)
    assert list(outbox.id) == [ids["a2"]]


def test_a_viewer_cannot_resend(console_app, seeded):
    app, _ids = _page(console_app, seeded, user=("vic", "viewer"))
    assert app.button(key="resend_preview").disabled
    assert any("viewer role" in caption.value for caption in app.caption)


def test_an_operator_resends_a_failed_alert_after_a_preview(console_app, seeded):
    app, ids = _page(console_app, seeded)
    choice = app.selectbox(key="resend_alert")
    assert (choice.options, choice.value) == (
        [f"{ids['a2']} · task_failed · failed · slack"],
        ids["a2"],
    )
    app.button(key="resend_preview").click().run()
    assert f"Resends alert {ids['a2']} (task_failed, pipeline / r2_failed)" in infos(app)
    assert "failed after 3 attempt(s)" in infos(app) and "XXXXsecret" not in infos(app)
    with seeded.store.session(readonly=True) as session:
        assert session.get(Alert, ids["a2"]).status == "failed"  # the preview wrote nothing
    app.button(key="resend_confirm").click().run()
    assert not app.exception
    assert any(f"alert {ids['a2']} queued for delivery" in s.value for s in app.success)
    with seeded.store.session(readonly=True) as session:
        alert = session.get(Alert, ids["a2"])
        assert (alert.status, alert.attempts, alert.next_attempt_at is not None) == (
            "pending",
            0,
            True,
        )
        audit = session.execute(select(AuditLog.event, AuditLog.actor, AuditLog.extra)).all()
    assert ("alerts.resend", "olga", {"alert_id": ids["a2"]}) in audit
