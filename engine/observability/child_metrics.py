"""Metrics of processes that do not own backends: attempt and callback processes.

Such a process installs `install_relay(config)` before it runs anything, and hands
`drain()` of what it returned back to its parent when it ends; the executor passes it to
`metrics.stats.replay`, the scheduler's backends (see `metrics.relay` for why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import masking
from engine.observability.settings import metrics_settings
from metrics import Stats, stats
from metrics.relay import RelayBackend

if TYPE_CHECKING:
    from engine.config import Config


def install_relay(config: Config) -> RelayBackend:
    """Make this process's `metrics.stats` buffer into a relay, with the configured lists."""
    settings = metrics_settings(config, serve=False)
    relay = RelayBackend()
    stats.install(
        Stats(
            [relay],
            allow=settings.allow_list,
            block=settings.block_list,
            redact=masking.redact,  # the task's secrets are known only in its process
        )
    )
    return relay
