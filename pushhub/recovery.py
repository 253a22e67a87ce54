"""Recovery state, without I/O: what a subscription holds while it is set up, and where
each durable channel's stream stands on this node.

- ``Held``: the live frames of one channel that arrive while a subscription is being set
  up (a presence join, a paced replay), bounded, to be merged by offset afterwards.
- ``can_recover`` and ``caught_up``: the all-or-nothing recovery decision and the point
  where a paced replay meets the held frames.
- ``StreamTracker``: the newest position delivered per durable channel, and the verdict
  on each arriving message (deliver, duplicate, or a gap that means loss).

Everything here is plain code tested with plain calls (tests/unit/test_recovery.py);
``Node`` does the awaiting. docs/durability.md states the guarantees.
"""

from __future__ import annotations

from enum import Enum

from pushhub.engine.base import HistoryRead
from pushhub.stream import NO_HISTORY, Position


class Held:
    """Events of one channel held while its subscription is set up (a presence join,
    a recovery replay), with their offsets, to be merged afterwards (see Node).

    Bounded in count and bytes. Past either bound the oldest are dropped and
    ``overflowed`` is set: on a durable channel the replay then reads on from the
    history until it meets what is still held, so nothing is lost and the client is
    never closed for it.
    """

    __slots__ = ("frames", "max_bytes", "max_frames", "overflowed", "overflows", "size")

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.frames: list[tuple[int | None, str]] = []
        self.size = 0
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.overflowed = False
        self.overflows = 0  # how many times, so a replay can tell a new overflow apart

    def add(self, offset: int | None, frame: str) -> None:
        self.frames.append((offset, frame))
        self.size += len(frame)
        if len(self.frames) > self.max_frames or self.size > self.max_bytes:
            self.overflowed = True
            self.overflows += 1
            self.frames = [self.frames[-1]]
            self.size = len(frame)

    def first_offset(self) -> int | None:
        for offset, _ in self.frames:
            if offset is not None:
                return offset
        return None

    def after(self, position: int | None) -> list[str]:
        """The frames to send once the subscription is set up: every presence event, and
        the durable messages beyond ``position`` (what the replay did not cover)."""
        return [f for o, f in self.frames if o is None or position is None or o > position]


def can_recover(since: Position, read: HistoryRead, cap: int) -> bool:
    """Whether the gap after ``since`` can be closed exactly from ``read``, the first
    page of the history after it: all of it, or nothing.

    A client that saw the channel without history (the empty epoch) has missed nothing
    only while there still is none: a history that appeared since may be a second life
    of one it never saw, so it cannot be proved complete.
    """
    top = read.position.offset
    if since.epoch != read.position.epoch or since.offset > top:
        return False
    missed = top - since.offset
    if missed == 0:
        return True
    if missed > cap or read.first == 0 or read.first > since.offset + 1:
        return False
    got = [m.offset for m in read.messages[:missed]]
    return bool(got) and got == list(range(since.offset + 1, since.offset + 1 + len(got)))


def caught_up(held: Held | None, last: int, target: int, seen: int) -> bool:
    """Whether a replay that has sent up to ``last`` meets the frames ``held`` for the
    client.

    ``target`` is the newest position the history reads gave, ``seen`` how many times the
    held frames had overflowed when the last read began. Without an overflow, the held
    frames start right after the first read's position. After one, they start at the
    oldest durable frame still held; if none is (only presence events were kept), every
    dropped frame is covered only by a read that began after the overflow.
    """
    if held is None or not held.overflowed:
        return last >= target
    first = held.first_offset()
    if first is None:
        return last >= target and held.overflows == seen
    return last + 1 >= first


class Verdict(Enum):
    """What to do with a durable message arriving live."""

    DELIVER = "deliver"  # the next one: send it
    DUPLICATE = "duplicate"  # already delivered (or older): drop it
    GAP = "gap"  # something was lost on the way (or the history restarted): recover


class StreamTracker:
    """The newest position delivered on each durable channel this node holds.

    A message is the next one when it has the same epoch and the next offset, or when
    it is offset 1 of a channel whose position was ``NO_HISTORY`` (the first message of
    a history that was seen empty). Anything else ahead of the position is a gap.
    """

    __slots__ = ("_positions",)

    def __init__(self) -> None:
        self._positions: dict[str, Position] = {}

    def observe(self, channel: str, offset: int, epoch: str) -> Verdict:
        """Judge a live message, and move the position when it is delivered. A channel
        with no position yet (its first subscriber is still catching up) takes it."""
        last = self._positions.get(channel)
        if last is not None:
            if last.epoch == epoch and offset <= last.offset:
                return Verdict.DUPLICATE
            born = last == NO_HISTORY and offset == 1
            if not born and (last.epoch != epoch or offset != last.offset + 1):
                return Verdict.GAP
        self._positions[channel] = Position(offset, epoch)
        return Verdict.DELIVER

    def start(self, channel: str, position: Position) -> None:
        """Record where a newly held channel stands, unless a live message already did."""
        self._positions.setdefault(channel, position)

    def forget(self, channel: str) -> None:
        self._positions.pop(channel, None)

    def get(self, channel: str) -> Position | None:
        return self._positions.get(channel)

    def channels(self) -> list[str]:
        return list(self._positions)

    def moved(self, channel: str, current: Position | None) -> bool:
        """Whether the stream's ``current`` position (None: no history) differs from the
        one delivered here: after a reconnect, that means messages were lost."""
        return (current or NO_HISTORY) != self._positions.get(channel)
