"""dagwatch alerts: Apprise notifiers, routes, SLA and deadline checks, and the alert outbox.

`from alerts import AppriseNotifier` loads the notifier module on first use only, so the
engine's workers, which import the alerts plugin for every attempt, never pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alerts.notifiers import AppriseNotifier

__all__ = ["AppriseNotifier"]


def __getattr__(name: str) -> Any:
    if name == "AppriseNotifier":
        from alerts.notifiers import AppriseNotifier

        return AppriseNotifier
    raise AttributeError(f"module 'alerts' has no attribute {name!r}")
