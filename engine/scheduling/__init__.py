"""Scheduling: the scheduler loop and what it decides with.

Which runs are due (`run_creation`), which task instances may run (`deps`, trigger rules),
how mapped tasks expand (`expansion`), what limits hold them (`limits`: pools, parallelism,
concurrency) and why one is not running (`explain`); `locks` keeps one scheduler per SQLite
metastore.
"""
