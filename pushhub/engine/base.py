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

Presence (see docs/presence.md), per channel:

* An entry is one connection, ``conn_id``, belonging to one member: ``u:<user id>`` or,
  for an anonymous connection, ``c:<conn id>``. A member counts its connections across
  all nodes; member ``info`` is the latest given.
* ``presence_join`` of a member's first connection, and ``presence_leave`` or expiry of
  its last, publish a presence event on the channel itself (an envelope, see
  ``pushhub.protocol.ENVELOPE``) when asked to emit; never a leave while another
  connection of that member remains.
* An entry expires at ``now + ttl`` unless refreshed; expired entries are removed (with
  their events) by the next refresh of the channel from any node, and whole channels
  of a node whose lease lapsed are removed by ``reap_dead_nodes``.
* Times are milliseconds from the node's clock, passed in, so tests inject the clock.
* Member pages are in member-key order; paging with ``after`` is stable while members
  come and go (a member present throughout appears exactly once).

Durable channels (see docs/durability.md), those the channel rules mark ``durable``:

* ``publish_durable`` is one atomic step: the channel's next offset (previous + 1),
  an append to its stream capped at ``history_size`` (oldest dropped), a TTL of
  ``history_ttl`` on the history, and a publish of the payload with its offset and
  epoch (an envelope, see ``pushhub.protocol.ENVELOPE``). Publishes to one channel are
  delivered in offset order.
* A given idempotency key publishes once; a retry answers the first position.
* The epoch names one life of a channel's history. A history lost (expired, cleared,
  Redis data lost) comes back under a new epoch with offsets from 1 again.
* Reading the history of a channel that has none writes nothing and answers
  ``NO_HISTORY``: offset 0 and the empty epoch. The epoch is made by the first publish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pushhub.stream import Position

#: Called with (channel, payload) for every payload received on a subscribed channel.
MessageHandler = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class PresenceMember:
    key: str  # "u:<user id>" or "c:<conn id>"
    connections: int
    info: bytes | None  # compact JSON object, as given at join


@dataclass(frozen=True, slots=True)
class PresenceCount:
    users: int
    connections: int


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    conn_id: str
    member: str
    info: bytes | None


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    offset: int
    data: bytes  # the payload exactly as published


@dataclass(frozen=True, slots=True)
class HistoryRead:
    position: Position  # the newest offset given out, and the epoch
    first: int  # the oldest offset still kept, 0 when none is
    messages: list[HistoryMessage]


#: Called after the engine re-established its subscriptions following an outage, when
#: payloads may have been lost meanwhile.
ResubscribeHandler = Callable[[], None]


class Engine(Protocol):
    """Cross-node transport of channel payloads."""

    name: str

    async def start(
        self, handler: MessageHandler, on_resubscribe: ResubscribeHandler | None = None
    ) -> None:
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

    # -- presence --------------------------------------------------------------------

    async def presence_join(
        self, channel: str, entry: PresenceEntry, now_ms: int, ttl_ms: int, emit: bool
    ) -> None:
        """Add (or refresh) one connection's entry; emit ``join`` for a member's first."""

    async def presence_leave(self, channel: str, conn_id: str, emit: bool) -> None:
        """Remove one connection's entry; emit ``leave`` after a member's last. Idempotent."""

    async def presence_refresh(
        self, items: Sequence[tuple[str, Sequence[str]]], now_ms: int, ttl_ms: int, emit: bool
    ) -> dict[str, list[str]]:
        """For each (channel, conn ids): first remove the channel's expired entries, then
        extend the given entries to ``now + ttl``. Returns, per channel, the conn ids that
        were missing (lost with Redis data, or reaped) so the node can join them again."""

    async def presence_page(
        self, channel: str, after: str | None, limit: int
    ) -> list[PresenceMember]:
        """Up to ``limit`` members with keys greater than ``after``, in key order."""

    async def presence_counts(self, channels: Sequence[str]) -> list[PresenceCount]:
        """Users and connections per channel, in O(1) each, without reading members."""

    async def node_heartbeat(
        self,
        node_id: str,
        now_ms: int,
        lease_ms: int,
        added: Iterable[str] = (),
        removed: Iterable[str] = (),
    ) -> bool:
        """Renew this node's lease and record the channels where it holds presence.
        False if the lease was gone (the node was reaped, or Redis lost its data)."""

    async def node_leave(self, node_id: str) -> None:
        """Drop this node's lease and channel record (a clean shutdown)."""

    async def reap_dead_nodes(self, node_id: str, now_ms: int) -> list[str]:
        """Remove the presence entries of every node whose lease lapsed, emitting their
        leave events, exactly once across all nodes. Returns the reaped node ids."""

    # -- durable channels --------------------------------------------------------------

    async def publish_durable(
        self, channel: str, payload: bytes, idempotency_key: str | None = None
    ) -> Position:
        """Append and publish atomically; the position the message was given."""

    async def read_history(
        self,
        channel: str,
        after: int | None,
        limit: int,
        reverse: bool = False,
        max_bytes: int = 0,
    ) -> HistoryRead:
        """Up to ``limit`` kept messages with offsets above ``after`` (oldest first), or
        below it with ``reverse`` (newest first), with the position, in one atomic read.
        With ``max_bytes``, messages stop once their data would pass it (at least one is
        returned when any is kept). Writes nothing."""

    async def clear_history(self, channel: str) -> Position:
        """Drop the channel's history and start a new epoch."""

    async def stream_positions(self, channels: Sequence[str]) -> list[Position | None]:
        """Each channel's position, or None where the channel has no history now."""

    # -- limits shared across nodes ------------------------------------------------------

    async def acquire_user_connection(
        self, user: str, conn_id: str, now_ms: int, ttl_ms: int, limit: int
    ) -> bool:
        """Count one connection of ``user``; False when the user already holds ``limit``
        (0: no limit). Entries expire after ``ttl_ms`` unless refreshed."""

    async def refresh_user_connections(
        self, items: Sequence[tuple[str, Sequence[str]]], now_ms: int, ttl_ms: int
    ) -> None:
        """Extend the given (user, conn ids) entries to ``now + ttl``."""

    async def release_user_connection(self, user: str, conn_id: str) -> None:
        """Stop counting one connection of ``user``. Idempotent."""

    async def rate_limit(self, key: str, rate: float, burst: int, now_ms: int) -> bool:
        """One event against a limit of ``rate`` a second with ``burst``, shared by all
        nodes; False when over the limit."""
