"""Imported by the forkserver's server only: do once what every forked process would repeat.

Runs a no-op attempt against a throwaway in-memory metastore (`warmup.in_memory`), so
the SQLAlchemy mappers, the ORM and compiler structures, logging and templating are
built before anything forks, then freezes the garbage collector's view of all that: a
process forked from here never traverses those objects, so it does not write to (and
copy) their pages just to find them alive. Failures are logged and ignored: a cold
child is slower, not wrong.
"""

from __future__ import annotations

import gc
import logging

from engine.execution.local import warmup

log = logging.getLogger(__name__)

try:
    warmup.in_memory()
except Exception as exc:  # the forkserver must start even if this fails
    log.warning("forkserver warm-up attempt failed: %s", exc)
gc.freeze()
