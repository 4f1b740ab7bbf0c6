"""Engine hooks: plugins found by entry point, tick hooks and services run by the scheduler."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from engine import hooks
from engine.clock import FakeClock
from engine.execution.stub import StubExecutor
from engine.scheduling.scheduler import Scheduler
from engine.store import transitions
from tests.integration.test_scheduler_tick import T0


def test_the_alerts_plugin_is_found_through_its_entry_point(config):
    assert "alerts" in hooks.discover()
    registry = hooks.install(config)
    assert registry.plugins == ["alerts", "console"]
    assert [hook.name for hook in registry.tick_hooks][:1] == ["import_errors"]
    assert registry.listeners[0] in transitions._listeners


def test_install_replaces_and_uninstall_removes_the_listeners(config):
    first = hooks.install(config)
    second = hooks.install(config)
    assert first.listeners[0] not in transitions._listeners
    assert second.listeners[0] in transitions._listeners
    hooks.uninstall()
    assert not set(second.listeners) & set(transitions._listeners)


def test_a_disabled_plugin_registers_nothing(config):
    registry = hooks.install(config.with_overrides(alerts__enabled=False))
    assert registry.plugins == ["alerts", "console"]  # console: the capacity rollup service
    assert registry.listeners == [] and registry.tick_hooks == [] and len(registry.services) == 1


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self, timeout: float) -> None:
        self.calls.append(f"stop {timeout:g}")


def test_tick_hooks_run_at_their_interval_and_a_failing_one_never_stops_the_tick(
    store, config, caplog
):
    seen: list[object] = []

    def broken(context: hooks.TickContext) -> None:
        raise RuntimeError("hook bug")

    registry = hooks.Registry()
    registry.add_tick_hook(hooks.TickHook("broken", broken))
    registry.add_tick_hook(hooks.TickHook("every-tick", lambda ctx: seen.append(ctx.now)))
    registry.add_tick_hook(hooks.TickHook("hourly", lambda ctx: seen.append("hourly"), 3600))
    recorder = Recorder()
    registry.add_service(lambda cfg, st: recorder)
    scheduler = Scheduler(store, config, StubExecutor(), clock=FakeClock(T0), registry=registry)
    scheduler.start()

    with caplog.at_level(logging.ERROR, logger="engine.hooks"):
        scheduler.tick(T0)
        report = scheduler.tick(T0)
    scheduler.shutdown(2.5)

    assert report is scheduler.last_report
    assert seen == [T0, "hourly", T0]
    assert caplog.text.count("tick hook broken failed: hook bug") == 2
    assert recorder.calls == ["start", "stop 2.5"]


def test_a_tick_hook_sees_the_schedulers_plans(store, config):
    seen: dict[str, object] = {}
    registry = hooks.Registry()
    registry.add_tick_hook(
        hooks.TickHook("peek", lambda ctx: seen.update(plan=ctx.plan_of("nope"), ex=ctx.executor))
    )
    executor = StubExecutor()
    scheduler = Scheduler(store, config, executor, clock=FakeClock(T0), registry=registry)
    scheduler.tick(T0)
    assert seen == {"plan": None, "ex": executor}


def test_a_plugin_without_register_is_ignored(config):
    registry = hooks.install(config, plugins=[SimpleNamespace(__name__="empty")])
    assert registry.plugins == []
