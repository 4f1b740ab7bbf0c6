"""Airflow 2's `airflow.utils` helpers that DAG files import (see engine.sdk.compat).

Imported with `engine`, so `import engine` then `engine.utils.dates.days_ago(1)` works as
`import airflow` then `airflow.utils.dates.days_ago(1)` did.
"""

from engine.utils import dates, decorators

__all__ = ["dates", "decorators"]
