"""Retry delays: fixed, exponential with deterministic jitter, capped."""

from __future__ import annotations

from datetime import timedelta

from engine.sdk.retry import MAX_RETRY_DELAY_SECONDS, retry_delay


def test_fixed_delay_is_the_base():
    for try_number in (1, 2, 5):
        assert retry_delay(
            base=timedelta(seconds=30),
            try_number=try_number,
            exponential=False,
            max_delay=None,
            seed="d#t#x",
        ) == timedelta(seconds=30)


def test_exponential_backoff_doubles_within_its_jitter_band():
    base = timedelta(seconds=10)
    for try_number in range(1, 8):
        low = 10 * 2 ** (try_number - 1)
        delay = retry_delay(
            base=base, try_number=try_number, exponential=True, max_delay=None, seed="d#t#x"
        ).total_seconds()
        assert low <= delay < 2 * low, (try_number, delay)


def test_jitter_is_deterministic_per_attempt_and_differs_between_tasks():
    def delay(seed: str) -> timedelta:
        return retry_delay(
            base=timedelta(seconds=100), try_number=3, exponential=True, max_delay=None, seed=seed
        )

    assert delay("dag#a#2026") == delay("dag#a#2026")
    assert len({delay(f"dag#{task}#2026") for task in "abcdefgh"}) > 1


def test_max_retry_delay_and_the_overflow_cap_bound_the_delay():
    capped = retry_delay(
        base=timedelta(seconds=10),
        try_number=10,
        exponential=True,
        max_delay=timedelta(minutes=1),
        seed="s",
    )
    assert capped == timedelta(minutes=1)
    huge = retry_delay(
        base=timedelta(hours=1), try_number=200, exponential=True, max_delay=None, seed="s"
    )
    assert huge == timedelta(seconds=MAX_RETRY_DELAY_SECONDS)


def test_zero_base_still_backs_off_at_least_a_second():
    delay = retry_delay(base=timedelta(0), try_number=1, exponential=True, max_delay=None, seed="s")
    assert timedelta(seconds=1) <= delay < timedelta(seconds=2)
