"""dagwatch alerts: Apprise notifiers, routes, SLA and deadline checks, and the alert outbox."""

from __future__ import annotations

__all__: list[str] = []
