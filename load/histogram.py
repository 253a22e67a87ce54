"""Latency histogram: log-linear buckets after HdrHistogram, mergeable across processes.

Values are integers (microseconds here). Below 128 every value has its own bucket; above,
each power of two is cut into 64 buckets, so a reported value is within 1/64 (1.6 %) of
the true one. Recording is a dictionary increment, so a worker can afford one per message,
and merging histograms from several processes is exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

SUB_BUCKET_BITS = 6
_SUB = 1 << SUB_BUCKET_BITS  # 64 buckets per power of two
_LINEAR = _SUB << 1  # values below 128 are exact


def bucket_of(value: int) -> int:
    """The bucket index holding ``value`` (negative values count as 0)."""
    if value < _LINEAR:
        return value if value > 0 else 0
    shift = value.bit_length() - SUB_BUCKET_BITS - 1
    return (shift << SUB_BUCKET_BITS) + (value >> shift)


def bucket_range(index: int) -> tuple[int, int]:
    """The smallest and largest value that fall into bucket ``index``."""
    if index < _LINEAR:
        return index, index
    shift = (index >> SUB_BUCKET_BITS) - 1
    top = index - (shift << SUB_BUCKET_BITS)
    return top << shift, ((top + 1) << shift) - 1


HistogramState = tuple[dict[int, int], int, int, int]


class LatencyHistogram:
    __slots__ = ("counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, value: int) -> None:
        index = bucket_of(value)
        self.counts[index] = self.counts.get(index, 0) + 1
        if self.total == 0 or value < self.min:
            self.min = max(value, 0)
        if value > self.max:
            self.max = value
        self.total += 1

    def merge(self, other: LatencyHistogram) -> None:
        if other.total == 0:
            return
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.min = other.min if self.total == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.total += other.total

    def percentile(self, q: float) -> int | None:
        """The nearest-rank ``q``-th percentile (0 < q <= 100), or None when empty.

        Reported as the middle of the bucket, clamped to the exact min and max.
        """
        if not 0 < q <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {q}")
        if self.total == 0:
            return None
        rank = max(1, math.ceil(q / 100 * self.total))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                lo, hi = bucket_range(index)
                return min(max((lo + hi) // 2, self.min), self.max)
        return self.max  # unreachable: the counts add up to total

    def state(self) -> HistogramState:
        """A picklable snapshot, for sending across a process boundary."""
        return dict(self.counts), self.total, self.min, self.max

    @classmethod
    def from_state(cls, state: HistogramState) -> LatencyHistogram:
        hist = cls()
        hist.counts, hist.total, hist.min, hist.max = dict(state[0]), *state[1:]
        return hist

    @classmethod
    def merged(cls, parts: Iterable[LatencyHistogram]) -> LatencyHistogram:
        out = cls()
        for part in parts:
            out.merge(part)
        return out
