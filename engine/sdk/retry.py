"""When the next attempt of a failed task may start.

Same formula as Airflow, so retry timing carries over: a fixed `retry_delay`, or with
`retry_exponential_backoff` a delay between d*2^(n-1) and d*2^n, spread by a hash of the
attempt (deterministic jitter, so restarts agree) and capped by `max_retry_delay`.
"""

from __future__ import annotations

import hashlib
import math
from datetime import timedelta

#: Upper bound for computed delays, so exponentiation cannot overflow timedelta.
MAX_RETRY_DELAY_SECONDS = 24 * 60 * 60


def retry_delay(
    *,
    base: timedelta,
    try_number: int,
    exponential: bool,
    max_delay: timedelta | None,
    seed: str,
) -> timedelta:
    """The wait after failed attempt `try_number` (1 for the first attempt)."""
    if not exponential:
        return base
    min_backoff = max(1, math.ceil(base.total_seconds() * 2 ** (try_number - 1)))
    digest = int(hashlib.sha1(f"{seed}#{try_number}".encode()).hexdigest(), 16)
    seconds = min(min_backoff + digest % min_backoff, MAX_RETRY_DELAY_SECONDS)
    delay = timedelta(seconds=seconds)
    return min(delay, max_delay) if max_delay else delay
