"""The in-process engine: one node, no Redis, the same contract.

Several ``MemoryEngine`` objects that share one ``MemoryBroker`` behave like nodes
sharing one Redis, which lets the contract suite check cross-node behaviour in process.
"""

from __future__ import annotations

from collections.abc import Iterable

from pushhub.engine.base import MessageHandler
from pushhub.errors import EngineUnavailable


class MemoryBroker:
    """What a Redis server is to the Redis engine: channel -> subscribed engines."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, set[MemoryEngine]] = {}

    def deliver(self, channel: str, payload: bytes) -> int:
        engines = self.subscriptions.get(channel, ())
        for engine in tuple(engines):
            engine.receive(channel, payload)
        return len(engines)


class MemoryEngine:
    name = "memory"

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self._broker = broker if broker is not None else MemoryBroker()
        self._handler: MessageHandler | None = None
        self._channels: set[str] = set()

    async def start(self, handler: MessageHandler) -> None:
        self._handler = handler

    async def close(self) -> None:
        for channel in tuple(self._channels):
            await self.unsubscribe(channel)
        self._handler = None

    def _require_started(self) -> None:
        if self._handler is None:
            raise EngineUnavailable("memory engine is not started")

    async def subscribe(self, channel: str) -> None:
        self._require_started()
        self._channels.add(channel)
        self._broker.subscriptions.setdefault(channel, set()).add(self)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        engines = self._broker.subscriptions.get(channel)
        if engines is not None:
            engines.discard(self)
            if not engines:
                del self._broker.subscriptions[channel]

    async def publish(self, channel: str, payload: bytes) -> None:
        self._require_started()
        self._broker.deliver(channel, payload)

    async def publish_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        self._require_started()
        for channel, payload in items:
            self._broker.deliver(channel, payload)

    async def check(self) -> None:
        self._require_started()

    def subscribed_channels(self) -> frozenset[str]:
        return frozenset(self._channels)

    def receive(self, channel: str, payload: bytes) -> None:
        if self._handler is not None:
            self._handler(channel, payload)


def from_url(url: str, **options: object) -> MemoryEngine:
    """``memory://``: a fresh single-node engine. Options are accepted and ignored."""
    return MemoryEngine()
