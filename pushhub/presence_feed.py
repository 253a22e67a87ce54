"""Join and leave events, gathered per channel for one tick and sent as one frame.

Every join is an event for every member, so n clients joining one channel cost n²
deliveries if each is sent as it comes. The node instead gathers a channel's events for
``presence_tick`` (0.1 s by default) and broadcasts them as one frame: the events' lines
joined with "\\n" (clients already split frames on newlines), encoded once for all local
subscribers. A client then gets at most one presence frame per channel per tick.

Past ``join_leave_max_members`` members a channel's per-member events stop: subscribers
get a ``presence_count`` frame (users, connections) instead, only when the counts
changed and at most once per ``count_every`` ticks (a second, by default: a frame to
every member of a large channel each tick would cost more than the events it
replaces); the member list stays available page by page. When the channel falls back
to the bound, or a tick gathered more than ``max_bytes`` of events (the rest were
dropped), a ``presence_count`` frame with ``"join_leave": true`` tells subscribers that
per-member events go on from here and that they should read the member list again.

Plain code: no I/O, no clock. The node adds what the engine reports and calls ``flush``
once per tick.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson


class _Tick:
    __slots__ = ("connections", "lines", "overflowed", "size", "users")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.size = 0
        self.overflowed = False
        self.users = -1  # unknown until an event carries the counts
        self.connections = -1


def count_frame(channel: str, users: int, connections: int, join_leave: bool) -> str:
    return orjson.dumps(
        {
            "type": "presence_count",
            "channel": channel,
            "users": users,
            "connections": connections,
            "join_leave": join_leave,
        }
    ).decode()


class PresenceFeed:
    """Per channel: the event lines of the current tick and the member counts."""

    __slots__ = ("_count_every", "_counting", "_flushes", "_max_bytes", "_max_members", "_ticks")

    def __init__(
        self, max_members: Callable[[str], int], max_bytes: int, count_every: int = 1
    ) -> None:
        #: A channel's bound on members with per-member events (0: no bound).
        self._max_members = max_members
        #: The most bytes of event lines one frame may carry.
        self._max_bytes = max_bytes
        self._ticks: dict[str, _Tick] = {}
        #: Channels in count mode -> the counts last sent, and the flush that sent them.
        self._counting: dict[str, tuple[tuple[int, int], int]] = {}
        self._count_every = count_every
        self._flushes = 0

    def __len__(self) -> int:
        return len(self._ticks)

    def add(self, channel: str, line: str | None, users: int, connections: int) -> bool:
        """One event (``line``, or None for counts alone) and the channel's member counts
        after it. True when it is the first of this tick (the caller arms the tick)."""
        tick = self._ticks.get(channel)
        first = tick is None
        if tick is None:
            tick = self._ticks[channel] = _Tick()
        tick.users, tick.connections = users, connections
        if line is None or tick.overflowed:
            return first
        if tick.size + len(line) > self._max_bytes:
            # More than one frame may carry: drop this tick's events and have the
            # subscribers read the member list instead.
            tick.overflowed = True
            tick.lines = []
            tick.size = 0
            return first
        tick.lines.append(line)
        tick.size += len(line) + 1
        return first

    def flush(self) -> list[tuple[str, str]]:
        """The frame of each channel with something to say this tick, and a new tick."""
        ticks, self._ticks = self._ticks, {}
        self._flushes += 1
        out: list[tuple[str, str]] = []
        for channel, tick in ticks.items():
            frame = self._frame(channel, tick)
            if frame is not None:
                out.append((channel, frame))
        return out

    def _frame(self, channel: str, tick: _Tick) -> str | None:
        limit = self._max_members(channel)
        counts = (tick.users, tick.connections)
        if limit and tick.users > limit:
            last = self._counting.get(channel)
            if last is not None and last[0] == counts:
                return None
            if last is not None and self._flushes - last[1] < self._count_every:
                # Counts went out lately: these go with a later tick (newer ones, if
                # events come meanwhile), so the last change is never lost.
                carried = self._ticks.setdefault(channel, _Tick())
                if carried.users < 0:
                    carried.users, carried.connections = counts
                return None
            self._counting[channel] = (counts, self._flushes)
            return count_frame(channel, tick.users, tick.connections, False)
        if self._counting.pop(channel, None) is not None or tick.overflowed:
            # The events of this tick are relative to a list the subscribers do not
            # hold (they were counting) or incomplete: they read the list again.
            return count_frame(channel, max(tick.users, 0), max(tick.connections, 0), True)
        return "\n".join(tick.lines) if tick.lines else None

    def forget(self, channel: str) -> None:
        """The node no longer holds ``channel``: drop its tick and its mode."""
        self._ticks.pop(channel, None)
        self._counting.pop(channel, None)

    def counting(self, channel: str) -> bool:
        """Whether ``channel``'s subscribers get counts rather than per-member events."""
        return channel in self._counting
