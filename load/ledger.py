"""Loss accounting: what was published where, against what the clients received.

Every published message has a sequence number and a channel. A message is expected once
per subscriber of its channel; workers count receipts per sequence number. Loss is what
was expected and never came, duplicates what came more often than expected.

Scenarios whose clients come and go (``restart``, ``stormload``) count by *windows*
instead: each subscription of each client is a window ``[start, end)`` of publish times
(wall-clock ns) during which that client counts. A message is expected once per window
of its channel that holds its publish time (``expected_in_windows``); the workers count
a receipt only when the message's publish time lies in the receiving connection's window,
so both sides apply the same rule.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: The end of a window that is still open: later than any publish time.
OPEN = 2**63 - 1

#: (channel, start_ns, end_ns): a subscription that counts for publish times in [start, end).
Window = tuple[int, int, int]


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
        #: Publish time (time.time_ns) of each sequence number, 0 when not given.
        self._stamp_of = array("q")

    @property
    def published(self) -> int:
        return len(self._channel_of)

    def record(self, channel: int, stamp_ns: int = 0) -> int:
        """Record one publish on ``channel`` (at ``stamp_ns``); return its sequence number."""
        if not 0 <= channel < len(self.subscribers):
            raise ValueError(f"channel {channel} is not one of the {len(self.subscribers)}")
        self._channel_of.append(channel)
        self._stamp_of.append(stamp_ns)
        return len(self._channel_of) - 1

    def channels(self, start: int, stop: int) -> list[int]:
        return list(self._channel_of[start:stop])

    def stamps(self, start: int, stop: int) -> list[int]:
        return list(self._stamp_of[start:stop])

    def expected(self, start: int, stop: int) -> list[int]:
        """Expected receipts of each sequence number in ``[start, stop)``."""
        subs = self.subscribers
        return [subs[c] for c in self._channel_of[start:stop]]

    def account(self, start: int, stop: int, receipts: Sequence[int], unexpected: int = 0) -> Loss:
        """Loss over ``[start, stop)``; ``receipts[i]`` counts receipts of ``start + i``."""
        return account(self.expected(start, stop), receipts, unexpected)


def expected_in_windows(
    channels: Sequence[int], stamps: Sequence[int], windows: Iterable[Window]
) -> list[int]:
    """Expected receipts of each message: how many windows of its channel hold its
    publish time. ``channels[i]`` and ``stamps[i]`` are message i's channel and time."""
    starts: dict[int, list[int]] = {}
    ends: dict[int, list[int]] = {}
    for channel, start, end in windows:
        if end > start:
            starts.setdefault(channel, []).append(start)
            ends.setdefault(channel, []).append(end)
    for values in (*starts.values(), *ends.values()):
        values.sort()
    out = []
    for channel, t in zip(channels, stamps, strict=True):
        # Windows begun by t, less those over by t (an end is exclusive).
        begun = bisect_right(starts.get(channel, []), t)
        over = bisect_right(ends.get(channel, []), t)
        out.append(begun - over)
    return out


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
