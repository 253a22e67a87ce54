"""The local registry: which of this node's connections hold which channel.

The hub knows nothing of Redis or of other nodes. ``broadcast`` offers one encoded frame
to every local subscriber and never awaits, so a publish costs the node one encode and
one non-blocking append per subscriber.
"""

from __future__ import annotations

from collections.abc import Iterator

from pushhub.connection import Connection

#: Frames held for one subscription being set up (see ``connection.Held``); beyond it
#: (or beyond the outbound queue's bytes) the oldest held are dropped and a durable
#: channel's replay reads them from the history instead.
MAX_HELD = 10_000


class Hub:
    """channel -> the local connections subscribed to it."""

    __slots__ = ("_channels", "_connections")

    def __init__(self) -> None:
        self._channels: dict[str, set[Connection]] = {}
        self._connections: set[Connection] = set()

    def register(self, conn: Connection) -> None:
        self._connections.add(conn)

    def unregister(self, conn: Connection) -> None:
        self._connections.discard(conn)

    def holds(self, conn: Connection) -> bool:
        """Whether ``conn`` is registered (open, or closing and not yet detached)."""
        return conn in self._connections

    def add(self, conn: Connection, channel: str) -> bool:
        """Subscribe ``conn`` locally. True if it is the channel's first local subscriber."""
        subs = self._channels.get(channel)
        first = subs is None
        if subs is None:
            subs = self._channels[channel] = set()
        subs.add(conn)
        conn.channels.add(channel)
        return first

    def remove(self, conn: Connection, channel: str) -> bool:
        """Unsubscribe ``conn`` locally. True if the channel has no local subscriber left."""
        conn.channels.discard(channel)
        subs = self._channels.get(channel)
        if subs is None:
            return False
        subs.discard(conn)
        if subs:
            return False
        del self._channels[channel]
        return True

    def subscribers(self, channel: str) -> tuple[Connection, ...]:
        return tuple(self._channels.get(channel, ()))

    def has_subscribers(self, channel: str) -> bool:
        return channel in self._channels

    def broadcast(self, channel: str, frame: str, offset: int | None = None) -> int:
        """Offer ``frame`` to every local subscriber of ``channel``; return how many took it.

        A subscriber still recovering the channel gets the frame held back, with its
        offset, for the node to merge after the replay.
        """
        subs = self._channels.get(channel)
        if not subs:
            return 0
        delivered = 0
        for conn in subs:
            held = conn.held
            if held is not None and channel in held:
                held[channel].add(offset, frame)
                continue
            if conn.send(frame):
                delivered += 1
        return delivered

    def connections(self) -> tuple[Connection, ...]:
        return tuple(self._connections)

    def channels(self) -> Iterator[str]:
        return iter(self._channels)

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    @property
    def connection_count(self) -> int:
        return len(self._connections)
