"""The engine contract: channels across nodes, knowing nothing about connections.

An engine carries published payloads between nodes and holds the state the nodes share.
The contract comes in three parts, so that each user types against what it needs and a
new engine can be read against one concern at a time (after centrifuge's Broker and
PresenceManager):

* ``Broker``: Pub/Sub and durable history. The node calls ``subscribe`` when a channel
  gets its first local subscriber and ``unsubscribe`` after its last, and hands
  ``start`` one ``EngineEvents`` object that receives every event of every subscribed
  channel, already typed: a message, a durable message, a presence join or leave, a
  resubscription after an outage.
* ``PresenceStore``: the shared presence state (``pushhub.presence`` types against it).
* ``SharedLimits``: per-user connection counts and publish rates shared by all nodes.

``Engine`` is all three; both engines implement it, and each module ends with a
``TYPE_CHECKING`` line proving it. Engines are chosen by URL scheme (``pushhub.engine``).

How an engine carries events between nodes is its own business: the Redis engine
writes presence events and durable messages as a byte envelope (``engine/envelope.py``,
beside the Lua that writes it); the memory engine calls the events directly.

Each part's docstring states the guarantees every engine gives (checked by
tests/contract). One holds for all of them: operations fail with ``EngineUnavailable``
(never a library's own error) when the backing store cannot be reached, and fail fast
rather than hang.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pushhub.stream import Position


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


class EngineEvents(Protocol):
    """What an engine tells the node: every event of every channel it holds, typed.

    Handlers are called from the event loop, one at a time (never concurrently, never
    from another thread), and for one channel in the order the backing store delivered.
    They must not block, and should not raise: an engine supervises them anyway, so an
    exception out of a handler is logged (rate-limited) and delivery goes on.

    New kinds of event (batched presence, node lifecycle) are new methods here, with
    their own arguments; no engine needs another envelope for them.
    """

    def on_message(self, channel: str, payload: bytes) -> None:
        """A plain message: the payload bytes exactly as published."""

    def on_durable(self, channel: str, position: Position, payload: bytes) -> None:
        """A message of a durable channel, with the position ``publish_durable`` gave it,
        and its payload exactly as published."""

    def on_join(
        self, channel: str, member: str, info: bytes | None, counts: PresenceCount | None
    ) -> None:
        """A member's first connection joined ``channel``. ``info`` is the member's info
        as a compact JSON object (never deeper than the engine was told to accept), or
        None. ``counts`` are the channel's users and connections right after the join
        (None where the event did not say: an older node's, during a rolling upgrade)."""

    def on_leave(self, channel: str, member: str, counts: PresenceCount | None) -> None:
        """A member's last connection left ``channel`` (or expired, or was reaped);
        ``counts`` as for ``on_join``, right after the leave."""

    def on_resubscribed(self) -> None:
        """The engine re-established its subscriptions after an outage: events may have
        been lost meanwhile."""


class Broker(Protocol):
    """Pub/Sub between nodes, and the durable history published through it.

    Pub/Sub:

    * At-most-once: a payload published while no node is subscribed, or while the
      engine is reconnecting, is lost. Payload bytes arrive exactly as published.
    * After ``subscribe(channel)`` returns, every later ``publish`` on that channel, from
      any node, reaches ``on_message`` (unless the engine becomes unavailable meanwhile).
    * Payloads published by one publisher on one channel arrive in publish order.
    * After the backing store comes back, the engine re-establishes every subscription
      it holds by itself, then calls ``on_resubscribed``; the node does nothing.

    Durable channels (see docs/durability.md), those the channel rules mark ``durable``:

    * ``publish_durable`` is one atomic step: the channel's next offset (previous + 1),
      an append to its stream capped at ``history_size`` (oldest dropped), a TTL of
      ``history_ttl`` on the history, and a publish that reaches every subscribed node's
      ``on_durable`` with that position. Publishes to one channel are delivered in
      offset order.
    * A given idempotency key publishes once; a retry answers the first position.
    * The epoch names one life of a channel's history. A history lost (expired,
      cleared, Redis data lost) comes back under a new epoch with offsets from 1 again.
    * Reading the history of a channel that has none writes nothing and answers
      ``NO_HISTORY``: offset 0 and the empty epoch. The epoch is made by the first
      publish.
    """

    name: str
    #: Payloads received that carried no readable event (a malformed envelope from a
    #: raw publish), dropped with a rate-limited debug line.
    dropped: int

    async def start(self, events: EngineEvents) -> None:
        """Connect and begin delivering events to ``events``."""

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


class PresenceStore(Protocol):
    """The presence state shared by all nodes (see docs/presence.md), per channel:

    * An entry is one connection, ``conn_id``, belonging to one member: ``u:<user id>``
      or, for an anonymous connection, ``c:<conn id>``. A member counts its connections
      across all nodes; member ``info`` is the latest given.
    * ``presence_join`` of a member's first connection, and ``presence_leave`` or expiry
      of its last, reach every subscribed node's ``on_join`` / ``on_leave`` when asked to
      emit; never a leave while another connection of that member remains.
    * An entry expires at ``now + ttl`` unless refreshed; expired entries are removed
      (with their events) by the next refresh of the channel from any node, and whole
      channels of a node whose lease lapsed are removed by ``reap_dead_nodes``.
    * Times are milliseconds from the node's clock, passed in, so tests inject the clock.
    * Member pages are in member-key order; paging with ``after`` is stable while
      members come and go (a member present throughout appears exactly once).
    """

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


class SharedLimits(Protocol):
    """Limits that hold across all nodes: connections per user, publish rates."""

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


class Engine(Broker, PresenceStore, SharedLimits, Protocol):
    """A whole engine: what ``pushhub.engine.create_engine`` returns and the node holds."""
