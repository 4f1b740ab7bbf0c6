"""Where other packages plug into the engine, so the engine never imports them.

A plugin is a module (or object) named in the `dagwatch.plugins` entry-point group. It
may define `register(registry, config)`, which adds transition listeners (called inside
the transition's transaction), tick hooks (short batched work the scheduler runs in its
loop, e.g. SLA checks) and services (background threads the scheduler starts and stops,
e.g. the alert dispatcher); and `VERBS` (see `engine.cli.verbs`) or `commands()`, the
verbs it adds to the CLI.
`install(config)` runs once per configured process (`engine.runtime.configure`).
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.clock import Clock
    from engine.config import Config
    from engine.parsing.serialization import SerializedDAG
    from engine.store import transitions
    from engine.store.db import Store

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "dagwatch.plugins"


@dataclass
class TickContext:
    """What a tick hook may use: the tick's time, the metastore and the cached DAG plans."""

    now: datetime
    store: Store
    config: Config
    plan_of: Callable[[str], SerializedDAG | None]
    #: the tick's TickReport (read-only for hooks)
    report: Any = None
    #: the scheduler's executor, to queue callbacks (user code never runs in the tick)
    executor: Any = None
    #: `request_callbacks(session, requests, now)`: write callback requests in the hook's
    #: transaction; the scheduler hands them to its executor once it has committed
    request_callbacks: Callable[[Any, Sequence[Any], datetime], None] | None = None


@dataclass(frozen=True)
class TickHook:
    """Work the scheduler runs inside its loop; it must be batched and quick."""

    name: str
    run: Callable[[TickContext], None]
    #: seconds between two runs (0: every tick)
    interval: float = 0.0


class Service(Protocol):
    """A background thread that lives as long as the scheduler."""

    name: str

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...


#: Makes a service: `factory(config, store)`, plus `clock=` (the scheduler's `Clock`, which
#: the service's timers should read) when the factory takes a `clock` keyword.
ServiceFactory = Callable[..., Service]


def build_service(factory: ServiceFactory, config: Config, store: Store, clock: Clock) -> Service:
    """The service `factory` makes, handed `clock` if it takes one."""
    try:
        takes_clock = "clock" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): the two arguments
        takes_clock = False
    if takes_clock:
        return factory(config, store, clock=clock)
    return factory(config, store)


@dataclass
class Registry:
    """Everything the installed plugins added."""

    listeners: list[transitions.TransitionListener] = field(default_factory=list)
    tick_hooks: list[TickHook] = field(default_factory=list)
    services: list[ServiceFactory] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)

    def add_transition_listener(self, listener: transitions.TransitionListener) -> None:
        self.listeners.append(listener)

    def add_tick_hook(self, hook: TickHook) -> None:
        self.tick_hooks.append(hook)

    def add_service(self, factory: ServiceFactory) -> None:
        self.services.append(factory)


_lock = threading.Lock()
_current = Registry()


@functools.cache
def discover() -> Mapping[str, Any]:
    """The plugins declared by installed packages, by entry-point name (loaded lazily).

    Read once per process (forked workers inherit it), since scanning the installed
    distributions costs milliseconds that a task hop must not pay.
    """
    from importlib.metadata import entry_points  # tens of milliseconds: only when asked

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _load(name: str, entry: Any) -> Any:
    try:
        return entry.load()
    except Exception as exc:  # a broken plugin must not take the engine down
        log.error("plugin %s could not be loaded: %s", name, exc)
        return None


def install(config: Config, plugins: Iterable[Any] | None = None) -> Registry:
    """Register the plugins for this configuration, replacing what an earlier call added."""
    from engine.store import transitions

    global _current
    registry = Registry()
    if plugins is None:
        loaded = [(name, _load(name, entry)) for name, entry in sorted(discover().items())]
    else:
        loaded = [(getattr(p, "__name__", repr(p)), p) for p in plugins]
    for name, plugin in loaded:
        register = getattr(plugin, "register", None)
        if register is None:
            continue
        register(registry, config)
        registry.plugins.append(name)
    with _lock:
        previous, _current = _current, registry
    for listener in previous.listeners:
        transitions.remove_transition_listener(listener)
    for listener in registry.listeners:
        transitions.add_transition_listener(listener)
    return registry


def uninstall() -> None:
    """Remove every listener and hook (tests, and `runtime.reset`)."""
    from engine.store import transitions

    global _current
    with _lock:
        previous, _current = _current, Registry()
    for listener in previous.listeners:
        transitions.remove_transition_listener(listener)


def current() -> Registry:
    """What is installed now."""
    with _lock:
        return _current


def cli_verbs() -> list[Any]:
    """The verbs plugins add to `dagwatch`, loaded without any configuration: each plugin's
    `VERBS` (an `engine.cli.verbs.Verb` per verb, imported only when it runs), else the
    click commands its `commands()` returns."""
    found: list[Any] = []
    for name, entry in sorted(discover().items()):
        plugin = _load(name, entry)
        verbs = getattr(plugin, "VERBS", None)
        if verbs is not None:
            found.extend(verbs)
            continue
        provide = getattr(plugin, "commands", None)
        if provide is not None:
            found.extend(provide())
    return found


def cli_commands() -> list[Any]:
    """Click commands that plugins add to `dagwatch` (every one imported)."""
    return [verb.load() if hasattr(verb, "target") else verb for verb in cli_verbs()]


class TickHookRunner:
    """Runs the registry's tick hooks at their intervals; a failing hook is logged, not raised."""

    def __init__(self, hooks: Iterable[TickHook], clock: Callable[[], float]) -> None:
        self._hooks = list(hooks)
        self._clock = clock
        self._last: dict[str, float] = {}

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def run(self, context: TickContext) -> None:
        for hook in self._hooks:
            now = self._clock()
            last = self._last.get(hook.name)
            if last is not None and now - last < hook.interval:
                continue
            self._last[hook.name] = now
            try:
                hook.run(context)
            except Exception as exc:
                log.error("tick hook %s failed: %s", hook.name, exc, exc_info=exc)
