"""How alerts plug into the engine (`dagwatch.plugins` entry point): listeners, hooks, verbs."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.cli.verbs import Verb
from engine.config import Config
from engine.hooks import Registry, Service, ServiceFactory, TickContext, TickHook

if TYPE_CHECKING:
    from alerts.forecast import Forecaster
    from alerts.routes import Route
    from alerts.sla import SlaChecker
    from engine.clock import Clock


def register(registry: Registry, config: Config) -> None:
    """Write alerts with the transitions that cause them, check SLAs, run the dispatcher.

    The routes' notifier URLs are masked in this process from now on, before anything
    it writes or logs could quote one. What only a scheduler runs (the SLA check, the
    forecast, the dispatcher, the overdue check) is imported when it first runs: every
    process installs the plugins, a CLI verb too, and must not pay for them."""
    if not config["alerts.enabled"]:
        return
    from alerts import listener, notifiers, routes

    configured = routes.load_routes(config)
    notifiers.learn_route_secrets(configured.values())
    registry.add_transition_listener(listener.TransitionAlerts(configured, config))
    registry.add_tick_hook(
        TickHook("import_errors", listener.ImportErrorAlerts(configured, config).check, 5.0)
    )
    checks = SlaChecks(configured, config)
    registry.add_tick_hook(TickHook("sla", checks.check, 1.0))
    # each service reads the scheduler's clock (`engine.hooks.build_service`)
    registry.add_service(_forecast(checks, registry))
    registry.add_service(_dispatcher(registry))
    registry.add_service(_overdue_runs(registry))


class SlaChecks:
    """The `sla` tick hook: `alerts.sla.SlaChecker`, built on the first tick (or when the
    forecast service starts, which shares its forecaster)."""

    def __init__(self, routes: Mapping[str, Route], config: Config) -> None:
        self._routes = routes
        self._config = config
        self._lock = threading.Lock()
        self._checker: SlaChecker | None = None

    @property
    def checker(self) -> SlaChecker:
        """The SlaChecker (one per installation)."""
        with self._lock:
            if self._checker is None:
                from alerts.sla import SlaChecker

                self._checker = SlaChecker(self._routes, self._config)
            return self._checker

    @property
    def forecaster(self) -> Forecaster:
        return self.checker.forecaster

    def check(self, ctx: TickContext) -> None:
        self.checker.check(ctx)


def _forecast(checks: SlaChecks, registry: Registry) -> ServiceFactory:
    def start(config: Config, store: Any, *, clock: Clock) -> Service:
        from alerts.forecast import ForecastService

        return ForecastService(checks.forecaster, store, registry=registry, clock=clock)

    return start


def _dispatcher(registry: Registry) -> ServiceFactory:
    def start(config: Config, store: Any, *, clock: Clock) -> Service:
        from alerts.dispatcher import Dispatcher

        return Dispatcher(config, store, registry=registry, clock=clock)

    return start


def _overdue_runs(registry: Registry) -> ServiceFactory:
    def start(config: Config, store: Any, *, clock: Clock) -> Service:
        from alerts.overdue import OverdueRuns

        return OverdueRuns(config, store, registry=registry, clock=clock)

    return start


# the `alerts` and `sla` verbs, imported when they run
VERBS = (
    Verb(
        "alerts",
        "alerts.cli:alerts_group",
        "Alert delivery: test channels, list and resend alerts, run the dispatcher.",
    ),
    Verb("sla", "alerts.sla_cli:sla", "Task SLA misses and missed DAG-run deadlines."),
)
