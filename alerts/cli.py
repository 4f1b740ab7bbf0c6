"""`dagwatch alerts ...`: test a channel, list the outbox, resend an alert, run the dispatcher.

Targets are printed with `Target.describe()`: a URL or a secret never reaches the output.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime
from typing import Any

import click

from alerts import outbox
from alerts import store as alert_store
from engine.cli import CliContext, pass_cli
from engine.cli.output import echo_object, echo_rows, output_option
from engine.cli.usage import NON_NEGATIVE_INT, Group, usage_error
from engine.exceptions import ConfigError

log = logging.getLogger(__name__)

COLUMNS = (
    "id",
    "created_at",
    "event",
    "severity",
    "route",
    "dag_id",
    "run_id",
    "task_id",
    "status",
    "attempts",
    "count",
    "possible_duplicate",
    "last_error",
)
#: What a test notification talks about (no real DAG is involved).
_TEST_CONTEXT = {
    "dag_id": "example_dag",
    "task_id": "example_task",
    "run_id": "manual__alerts_test",
    "state": "test",
    "message": "A test notification sent by `dagwatch alerts test`.",
}


@click.group("alerts", cls=Group)
def alerts_group() -> None:
    """Alert delivery: test channels, list and resend alerts, run the dispatcher."""
    from engine.secrets import install_log_redaction

    install_log_redaction()


def _test_target(cli: CliContext, url: str | None, route_name: str | None) -> Any:
    from alerts.routes import load_routes
    from alerts.targets import Target

    if url:
        return Target.from_fields(url, None, None)
    routes = load_routes(cli.config)
    if route_name not in routes:
        known = ", ".join(sorted(routes)) or "none"
        raise ConfigError(f"no route named {route_name!r} (configured routes: {known})")
    return routes[route_name].target


@alerts_group.command("test")
@click.argument("url", required=False)
@click.option("--route", "route_name", help="Send through this configured route instead.")
@pass_cli
def test(cli: CliContext, url: str | None, route_name: str | None) -> None:
    """Send a test notification now to URL (an Apprise URL or env:VAR) or to a route."""
    from alerts import notifiers
    from alerts.delivery import deliver
    from alerts.routes import run_link
    from alerts.targets import ENV_PREFIX

    if bool(url) == bool(route_name):
        raise usage_error("give either an Apprise URL or --route NAME")
    target = _test_target(cli, url, route_name)
    for inline in target.urls:
        if not inline.startswith(ENV_PREFIX):
            notifiers.mask_url(inline)  # the URL was typed here: mask it before anything logs
    context = _TEST_CONTEXT | {
        "link": run_link(cli.config, _TEST_CONTEXT["dag_id"], _TEST_CONTEXT["run_id"])
    }
    title, body = notifiers.render_message("test", context)
    delivery = deliver(target, title, body, "info", cli.config)
    if not delivery.ok:
        click.echo(f"error: not delivered to {target.describe()}: {delivery.error}", err=True)
        raise SystemExit(1)
    channels = ", ".join(delivery.channels)
    click.echo(f"delivered to {target.describe()} ({channels}) in {delivery.latency:.2f} s")


@alerts_group.command("list")
@click.option("--status", type=click.Choice(outbox.STATUSES), help="Only alerts in this status.")
@click.option("--dag-id", default=None, help="Only the alerts of this DAG.")
@click.option("--event", default=None, help="Only alerts of this event (e.g. task_failed).")
@click.option(
    "--limit", type=NON_NEGATIVE_INT, default=100, show_default=True, help="At most this many."
)
@output_option
@pass_cli
def list_(
    cli: CliContext,
    status: str | None,
    dag_id: str | None,
    event: str | None,
    limit: int,
    output: str,
) -> None:
    """List alerts, newest first, with their delivery status."""
    with cli.store.session(readonly=True) as session:
        alerts = alert_store.listing(
            session, status=status, dag_id=dag_id, event=event, limit=limit
        )
        rows = [{column: getattr(alert, column) for column in COLUMNS} for alert in alerts]
    echo_rows(rows, COLUMNS, output)


@alerts_group.command()
@click.argument("alert_id", type=NON_NEGATIVE_INT)
@pass_cli
def resend(cli: CliContext, alert_id: int) -> None:
    """Deliver the alert ALERT_ID again (a failed or suppressed one, or a sent one)."""
    with cli.store.session() as session:
        outbox.resend(session, alert_id, actor=cli.actor, now=datetime.now(UTC))
    click.echo(f"alert {alert_id} queued for delivery")


@alerts_group.command()
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@output_option
@pass_cli
def dispatch(cli: CliContext, once: bool, output: str) -> None:
    """Deliver the alert outbox in the foreground until Ctrl-C or SIGTERM (or one pass)."""
    from alerts.dispatcher import Dispatcher
    from alerts.overdue import OverdueRuns

    config = cli.config
    logging.getLogger().setLevel(config["logging.level"])
    dispatcher = Dispatcher(config, cli.store)
    if once:
        report = dispatcher.run_once()
        text = ", ".join(f"{count} {name}" for name, count in report.as_dict().items())
        echo_object(report.as_dict(), output, text)
        return
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        log.warning("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    click.echo(f"alert dispatcher started: metastore {cli.store.display_url}")
    overdue = OverdueRuns(config, cli.store, first_wait=0.0)  # pages while no scheduler runs
    overdue.start()
    try:
        dispatcher.serve(stop)
    finally:
        overdue.stop(5.0)
    click.echo("alert dispatcher stopped")


INCIDENT_COLUMNS = (
    "id",
    "route",
    "dag_id",
    "run_id",
    "status",
    "alerts",
    "pages",
    "opened_at",
    "next_page_at",
    "resolved_at",
    "key",
)


@alerts_group.command("incidents")
@click.option(
    "--status", type=click.Choice(["open", "resolved"]), help="Only incidents in this status."
)
@click.option(
    "--limit", type=NON_NEGATIVE_INT, default=100, show_default=True, help="At most this many."
)
@output_option
@pass_cli
def incidents_(cli: CliContext, status: str | None, limit: int, output: str) -> None:
    """List incidents (alerts grouped and paged as one), newest first, with their keys."""
    from alerts import incidents

    with cli.store.session(readonly=True) as session:
        found = incidents.listing(session, status=status, limit=limit)
        rows = [{column: getattr(item, column) for column in INCIDENT_COLUMNS} for item in found]
    echo_rows(rows, INCIDENT_COLUMNS, output)
