"""``EngineEvents`` for tests: what an engine delivered, in order, as plain values.

A plain message is recorded as its payload bytes, so ``(channel, payload)`` pairs read
as they did when engines handed the node bytes; the other events as the small frozen
classes below.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson

from pushhub import protocol
from pushhub.engine.base import PresenceCount
from pushhub.stream import Position


@dataclass(frozen=True)
class Durable:
    position: Position
    payload: bytes


@dataclass(frozen=True)
class Join:
    member: str
    info: bytes | None
    #: The channel's counts after the join; not compared, so tests about who joined
    #: read as they did (tests about counts look at them).
    counts: PresenceCount | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Leave:
    member: str
    counts: PresenceCount | None = field(default=None, compare=False)


#: One event: the payload bytes of a plain message, or one of the classes above.
Event = bytes | Durable | Join | Leave


class Recorder:
    """Queues every event as ``(channel, event)`` and counts resubscriptions."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[str, Event]] = asyncio.Queue()
        self.resubscribed = 0

    def on_message(self, channel: str, payload: bytes) -> None:
        self.received.put_nowait((channel, payload))

    def on_durable(self, channel: str, position: Position, payload: bytes) -> None:
        self.received.put_nowait((channel, Durable(position, payload)))

    def on_join(
        self, channel: str, member: str, info: bytes | None, counts: PresenceCount | None
    ) -> None:
        self.received.put_nowait((channel, Join(member, info, counts)))

    def on_leave(self, channel: str, member: str, counts: PresenceCount | None) -> None:
        self.received.put_nowait((channel, Leave(member, counts)))

    def on_resubscribed(self) -> None:
        self.resubscribed += 1


class Ignore:
    """Events nobody looks at."""

    def on_message(self, channel: str, payload: bytes) -> None:
        pass

    def on_durable(self, channel: str, position: Position, payload: bytes) -> None:
        pass

    def on_join(
        self, channel: str, member: str, info: bytes | None, counts: PresenceCount | None
    ) -> None:
        pass

    def on_leave(self, channel: str, member: str, counts: PresenceCount | None) -> None:
        pass

    def on_resubscribed(self) -> None:
        pass


def presence_frame(channel: str, event: Event) -> dict[str, Any] | None:
    """The ``join`` or ``leave`` frame a node sends for ``event`` (None for messages)."""
    if isinstance(event, Join):
        return dict(orjson.loads(protocol.join_event(channel, event.member, event.info)))
    if isinstance(event, Leave):
        return dict(orjson.loads(protocol.leave_event(channel, event.member)))
    return None
