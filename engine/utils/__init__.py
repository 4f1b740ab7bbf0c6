"""Airflow 2's `airflow.utils` helpers that DAG files import (see engine.compat)."""
