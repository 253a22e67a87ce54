"""The load clients' reconnect schedule: the browser client's full-jitter backoff."""

from __future__ import annotations

import random

import pytest

from load import backoff


def test_the_ceiling_doubles_from_half_a_second_up_to_twenty() -> None:
    assert [backoff.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 20, 20]


def test_a_huge_or_negative_attempt_stays_within_the_bounds() -> None:
    assert backoff.ceiling(10_000) == 20.0
    assert backoff.ceiling(-3) == 0.5


@pytest.mark.parametrize("attempt", [0, 1, 3, 6, 50])
def test_the_delay_is_uniform_between_zero_and_the_ceiling(attempt: int) -> None:
    assert backoff.delay(attempt, lambda: 0.0) == 0.0
    assert backoff.delay(attempt, lambda: 0.5) == backoff.ceiling(attempt) / 2
    rng = random.Random(7)
    delays = [backoff.delay(attempt, rng.random) for _ in range(2000)]
    top = backoff.ceiling(attempt)
    assert all(0 <= d <= top for d in delays)
    # Full jitter: spread over the whole range, not bunched at its top.
    assert min(delays) < 0.05 * top
    assert max(delays) > 0.95 * top


def test_only_a_connection_that_stayed_up_resets_the_attempt_count() -> None:
    assert backoff.attempt_after_close(4, lived_s=5.0) == 0
    assert backoff.attempt_after_close(4, lived_s=60.0) == 0
    assert backoff.attempt_after_close(4, lived_s=0.2) == 4  # closed right away
    assert backoff.attempt_after_close(4, lived_s=None) == 4  # refused: never up
