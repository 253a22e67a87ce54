"""Capped exponential backoff with full jitter; the randomness is injected."""

from __future__ import annotations

import pytest

from pushhub.backoff import Backoff


def ceiling(lo: float, hi: float) -> float:
    """A 'random' source that always picks the top of the range."""
    assert lo == 0.0
    return hi


def test_ceiling_doubles_with_each_attempt_until_the_cap() -> None:
    backoff = Backoff(base=0.1, cap=5.0, rand=ceiling)

    delays = [backoff.next() for _ in range(9)]

    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
    assert backoff.attempt == 9


def test_ceiling_stays_at_the_cap_after_very_many_attempts() -> None:
    backoff = Backoff(base=0.1, cap=5.0, rand=ceiling)

    for _ in range(10_000):
        delay = backoff.next()

    assert delay == 5.0


def test_each_delay_is_drawn_from_zero_to_the_ceiling() -> None:
    ranges: list[tuple[float, float]] = []

    def record(lo: float, hi: float) -> float:
        ranges.append((lo, hi))
        return lo

    backoff = Backoff(base=1.0, cap=3.0, rand=record)
    delays = [backoff.next() for _ in range(4)]

    assert ranges == [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0), (0.0, 3.0)]
    assert delays == [0.0, 0.0, 0.0, 0.0]


def test_real_jittered_delays_stay_between_zero_and_the_cap() -> None:
    backoff = Backoff(base=0.01, cap=0.5)

    delays = [backoff.next() for _ in range(2000)]

    assert all(0.0 <= d <= 0.5 for d in delays)
    assert all(0.0 <= d <= 0.01 * 2**i for i, d in enumerate(delays[:6]))
    assert len(set(delays)) > 1000  # jittered, not a fixed schedule


def test_reset_starts_again_from_the_base_delay() -> None:
    backoff = Backoff(base=0.1, cap=5.0, rand=ceiling)
    for _ in range(5):
        backoff.next()

    backoff.reset()

    assert backoff.attempt == 0
    assert backoff.next() == pytest.approx(0.1)
    assert backoff.next() == pytest.approx(0.2)


@pytest.mark.parametrize(("base", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_base_that_is_not_positive_or_above_the_cap_is_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < base <= cap"):
        Backoff(base=base, cap=cap)
