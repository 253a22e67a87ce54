"""Loss accounting: what was published where, against what the clients received.

Every published message has a sequence number and a channel. A message is expected once
per subscriber of its channel; workers count receipts per sequence number. Loss is what
was expected and never came, duplicates what came more often than expected.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Loss:
    expected: int
    received: int
    lost: int
    duplicated: int
    #: Receipts of sequence numbers outside the range being accounted (late or foreign).
    unexpected: int = 0


class Ledger:
    """Sequence number -> channel of every published message, and subscribers per channel."""

    def __init__(self, subscribers: Sequence[int]) -> None:
        self.subscribers = list(subscribers)
        self._channel_of = array("I")

    @property
    def published(self) -> int:
        return len(self._channel_of)

    def record(self, channel: int) -> int:
        """Record one publish on ``channel``; return its sequence number."""
        if not 0 <= channel < len(self.subscribers):
            raise ValueError(f"channel {channel} is not one of the {len(self.subscribers)}")
        self._channel_of.append(channel)
        return len(self._channel_of) - 1

    def expected(self, start: int, stop: int) -> list[int]:
        """Expected receipts of each sequence number in ``[start, stop)``."""
        subs = self.subscribers
        return [subs[c] for c in self._channel_of[start:stop]]

    def account(self, start: int, stop: int, receipts: Sequence[int], unexpected: int = 0) -> Loss:
        """Loss over ``[start, stop)``; ``receipts[i]`` counts receipts of ``start + i``."""
        return account(self.expected(start, stop), receipts, unexpected)


def account(expected: Sequence[int], receipts: Sequence[int], unexpected: int = 0) -> Loss:
    lost = duplicated = 0
    received = sum(receipts)
    for i, want in enumerate(expected):
        got = receipts[i] if i < len(receipts) else 0
        if got < want:
            lost += want - got
        elif got > want:
            duplicated += got - want
    extra = sum(receipts[len(expected) :])  # beyond the range: not this range's messages
    return Loss(sum(expected), received - extra, lost, duplicated, unexpected + extra)


def merge_receipts(
    parts: Iterable[tuple[int, Sequence[int]]], start: int, stop: int
) -> tuple[list[int], int]:
    """Add per-worker receipt counts into one list over ``[start, stop)``.

    Each part is ``(base, counts)`` where ``counts[i]`` counts sequence ``base + i``.
    Returns the merged counts and how many receipts fell outside the range.
    """
    merged = [0] * max(0, stop - start)
    outside = 0
    for base, counts in parts:
        for i, count in enumerate(counts):
            if not count:
                continue
            seq = base + i
            if start <= seq < stop:
                merged[seq - start] += count
            else:
                outside += count
    return merged, outside
