"""`apply_defaults`, as Airflow 2's `airflow.utils.decorators` had it (a no-op here)."""

from __future__ import annotations

from engine.sdk.compat import apply_defaults

__all__ = ["apply_defaults"]
