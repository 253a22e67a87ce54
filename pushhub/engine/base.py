"""The engine contract: channels across nodes, knowing nothing about connections.

An engine carries published payloads between nodes. The node calls ``subscribe`` when a
channel gets its first local subscriber and ``unsubscribe`` after its last, and hands the
engine one callback that receives every payload of every subscribed channel.

Guarantees every engine gives (checked by tests/contract):

* Pub/Sub is at-most-once: a payload published while no node is subscribed, or while
  the engine is reconnecting, is lost. Payload bytes arrive exactly as published.
* After ``subscribe(channel)`` returns, every later ``publish`` on that channel, from any
  node, reaches the handler (unless the engine becomes unavailable meanwhile).
* Payloads published by one publisher on one channel arrive in publish order.
* The handler is called from the event loop, never concurrently, and must not block.
* Operations fail with ``EngineUnavailable`` (never a library's own error) when the
  backing store cannot be reached, and fail fast rather than hang.
* After the backing store comes back, the engine re-establishes every subscription it
  holds by itself; the node does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

#: Called with (channel, payload) for every payload received on a subscribed channel.
MessageHandler = Callable[[str, bytes], None]


class Engine(Protocol):
    """Cross-node transport of channel payloads."""

    name: str

    async def start(self, handler: MessageHandler) -> None:
        """Connect and begin delivering payloads to ``handler``."""

    async def close(self) -> None:
        """Stop delivering and release every connection. Idempotent."""

    async def subscribe(self, channel: str) -> None:
        """Start receiving ``channel``; returns once the subscription is live.

        Raises ``EngineUnavailable`` if it cannot be made live promptly.
        """

    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``. Never raises for a lost connection: the
        subscription is gone with it."""

    async def publish(self, channel: str, payload: bytes) -> None:
        """Deliver ``payload`` to every node subscribed to ``channel``."""

    async def publish_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Publish several payloads in one round trip where the engine can."""

    async def check(self) -> None:
        """Raise ``EngineUnavailable`` unless the engine can publish and receive now."""

    def subscribed_channels(self) -> frozenset[str]:
        """The channels this engine currently holds a subscription for."""
