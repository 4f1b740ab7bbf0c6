"""How alerts plug into the engine (`dagwatch.plugins` entry point): listeners, hooks, verbs."""

from __future__ import annotations

from engine.cli.verbs import Verb
from engine.config import Config
from engine.hooks import Registry, TickHook


def register(registry: Registry, config: Config) -> None:
    """Write alerts with the transitions that cause them, check SLAs, run the dispatcher.

    The routes' notifier URLs are masked in this process from now on, before anything
    it writes or logs could quote one."""
    if not config["alerts.enabled"]:
        return
    from alerts import dispatcher, forecast, listener, notifiers, overdue, routes, sla

    configured = routes.load_routes(config)
    notifiers.learn_route_secrets(configured.values())
    registry.add_transition_listener(listener.TransitionAlerts(configured, config))
    registry.add_tick_hook(
        TickHook("import_errors", listener.ImportErrorAlerts(configured, config).check, 5.0)
    )
    checker = sla.SlaChecker(configured, config)
    registry.add_tick_hook(TickHook("sla", checker.check, 1.0))
    # each service reads the scheduler's clock (`engine.hooks.build_service`)
    registry.add_service(
        lambda cfg, store, *, clock: forecast.ForecastService(
            checker.forecaster, store, registry=registry, clock=clock
        )
    )
    registry.add_service(
        lambda cfg, store, *, clock: dispatcher.Dispatcher(
            cfg, store, registry=registry, clock=clock
        )
    )
    registry.add_service(
        lambda cfg, store, *, clock: overdue.OverdueRuns(cfg, store, registry=registry, clock=clock)
    )


# the `alerts` and `sla` verbs, imported when they run
VERBS = (
    Verb(
        "alerts",
        "alerts.cli:alerts_group",
        "Alert delivery: test channels, list and resend alerts, run the dispatcher.",
    ),
    Verb("sla", "alerts.sla_cli:sla", "Task SLA misses and missed DAG-run deadlines."),
)
