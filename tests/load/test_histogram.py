"""The latency histogram: bucket bounds, percentiles, merging across processes."""

from __future__ import annotations

import random

import pytest

from load.histogram import LatencyHistogram, bucket_of, bucket_range


def test_values_below_128_have_exact_buckets() -> None:
    for value in range(128):
        assert bucket_range(bucket_of(value)) == (value, value)


def test_every_value_falls_inside_its_bucket_within_one_sixty_fourth() -> None:
    rng = random.Random(7)
    values = [*range(128, 5000), *(rng.randrange(5000, 10**10) for _ in range(5000))]
    for value in values:
        lo, hi = bucket_range(bucket_of(value))
        assert lo <= value <= hi
        assert (hi - lo + 1) / lo <= 1 / 64


def test_bucket_indices_are_contiguous_and_ordered() -> None:
    indices = [bucket_of(v) for v in range(0, 70_000)]
    assert indices == sorted(indices)
    assert set(indices) == set(range(indices[0], indices[-1] + 1))


def test_negative_values_count_as_zero() -> None:
    hist = LatencyHistogram()
    hist.record(-5)
    assert hist.percentile(100) == 0
    assert hist.min == 0


def test_percentiles_of_a_uniform_range_are_within_bucket_precision() -> None:
    hist = LatencyHistogram()
    for value in range(1, 10_001):
        hist.record(value)
    p50, p99 = hist.percentile(50), hist.percentile(99)
    assert p50 is not None
    assert abs(p50 - 5000) <= 5000 / 64
    assert p99 is not None
    assert abs(p99 - 9900) <= 9900 / 64
    assert hist.percentile(100) == 10_000
    assert hist.total == 10_000


def test_percentile_never_leaves_the_recorded_range() -> None:
    hist = LatencyHistogram()
    hist.record(1000)
    assert hist.percentile(1) == 1000
    assert hist.percentile(100) == 1000


def test_percentile_of_an_empty_histogram_is_none() -> None:
    assert LatencyHistogram().percentile(50) is None


@pytest.mark.parametrize("q", [0, -1, 101])
def test_percentile_outside_0_to_100_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        LatencyHistogram().percentile(q)


def test_merging_equals_recording_everything_in_one() -> None:
    rng = random.Random(3)
    values = [rng.randrange(0, 200_000) for _ in range(3000)]
    whole, parts = LatencyHistogram(), [LatencyHistogram() for _ in range(3)]
    for i, value in enumerate(values):
        whole.record(value)
        parts[i % 3].record(value)
    merged = LatencyHistogram.merged([LatencyHistogram(), *parts])
    assert merged.counts == whole.counts
    assert (merged.total, merged.min, merged.max) == (whole.total, whole.min, whole.max)


def test_state_survives_a_round_trip() -> None:
    hist = LatencyHistogram()
    for value in (3, 300, 30_000):
        hist.record(value)
    copy = LatencyHistogram.from_state(hist.state())
    assert copy.state() == hist.state()
    copy.record(1)
    assert hist.total == 3  # the copy does not share the counts
