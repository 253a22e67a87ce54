"""The in-process engine: one node, no Redis, the same contract.

Several ``MemoryEngine`` objects that share one ``MemoryBroker`` behave like nodes
sharing one Redis, which lets the contract suite check cross-node behaviour in process.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pushhub.engine.base import Engine, MessageHandler, PresenceCount, PresenceEntry, PresenceMember
from pushhub.errors import EngineUnavailable
from pushhub.protocol import join_envelope, leave_envelope


@dataclass
class _ChannelPresence:
    conns: dict[str, tuple[int, str]] = field(default_factory=dict)  # id -> (expiry, member)
    counts: dict[str, int] = field(default_factory=dict)  # member -> connections
    info: dict[str, bytes | None] = field(default_factory=dict)  # member -> info
    keys: list[str] = field(default_factory=list)  # member keys, sorted


class MemoryBroker:
    """What a Redis server is to the Redis engine: Pub/Sub plus presence state."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, set[MemoryEngine]] = {}
        self.presence: dict[str, _ChannelPresence] = {}
        self.leases: dict[str, int] = {}  # node id -> lease expiry
        self.node_channels: dict[str, set[str]] = {}

    def flush(self) -> None:
        """Lose every piece of state, as FLUSHALL does to Redis (subscriptions survive)."""
        self.presence.clear()
        self.leases.clear()
        self.node_channels.clear()

    # The presence operations mirror the Lua scripts of the Redis engine line for line.

    def join(self, channel: str, entry: PresenceEntry, expiry: int, emit: bool) -> None:
        state = self.presence.setdefault(channel, _ChannelPresence())
        existed = entry.conn_id in state.conns
        state.conns[entry.conn_id] = (expiry, entry.member)
        if entry.info is not None:
            state.info[entry.member] = entry.info
        else:
            state.info.setdefault(entry.member, None)
        if existed:
            return
        count = state.counts.get(entry.member, 0) + 1
        state.counts[entry.member] = count
        if count == 1:
            bisect.insort(state.keys, entry.member)
            if emit:
                self.deliver(channel, join_envelope(entry.member, state.info[entry.member]))

    def leave(self, channel: str, conn_id: str, emit: bool) -> None:
        state = self.presence.get(channel)
        if state is None or conn_id not in state.conns:
            return
        _, member = state.conns.pop(conn_id)
        count = state.counts[member] - 1
        if count > 0:
            state.counts[member] = count
        else:
            del state.counts[member]
            state.info.pop(member, None)
            del state.keys[bisect.bisect_left(state.keys, member)]
            if emit:
                self.deliver(channel, leave_envelope(member))
        if not state.conns:
            del self.presence[channel]

    def expire(self, channel: str, now: int, emit: bool) -> None:
        state = self.presence.get(channel)
        if state is None:
            return
        for conn_id in [c for c, (exp, _) in state.conns.items() if exp < now]:
            self.leave(channel, conn_id, emit)

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

    # -- presence --------------------------------------------------------------------

    async def presence_join(
        self, channel: str, entry: PresenceEntry, now_ms: int, ttl_ms: int, emit: bool
    ) -> None:
        self._require_started()
        self._broker.join(channel, entry, now_ms + ttl_ms, emit)

    async def presence_leave(self, channel: str, conn_id: str, emit: bool) -> None:
        self._require_started()
        self._broker.leave(channel, conn_id, emit)

    async def presence_refresh(
        self, items: Sequence[tuple[str, Sequence[str]]], now_ms: int, ttl_ms: int, emit: bool
    ) -> dict[str, list[str]]:
        self._require_started()
        missing: dict[str, list[str]] = {}
        for channel, conn_ids in items:
            self._broker.expire(channel, now_ms, emit)
            state = self._broker.presence.get(channel)
            conns = state.conns if state is not None else {}
            lost = []
            for conn_id in conn_ids:
                current = conns.get(conn_id)
                if current is None:
                    lost.append(conn_id)
                else:
                    conns[conn_id] = (now_ms + ttl_ms, current[1])
            if lost:
                missing[channel] = lost
        return missing

    async def presence_page(
        self, channel: str, after: str | None, limit: int
    ) -> list[PresenceMember]:
        self._require_started()
        state = self._broker.presence.get(channel)
        if state is None:
            return []
        start = 0 if after is None else bisect.bisect_right(state.keys, after)
        return [
            PresenceMember(key, state.counts[key], state.info.get(key))
            for key in state.keys[start : start + limit]
        ]

    async def presence_counts(self, channels: Sequence[str]) -> list[PresenceCount]:
        self._require_started()
        counts = []
        for channel in channels:
            state = self._broker.presence.get(channel)
            if state is None:
                counts.append(PresenceCount(0, 0))
            else:
                counts.append(PresenceCount(len(state.keys), len(state.conns)))
        return counts

    async def node_heartbeat(
        self,
        node_id: str,
        now_ms: int,
        lease_ms: int,
        added: Iterable[str] = (),
        removed: Iterable[str] = (),
    ) -> bool:
        self._require_started()
        existed = node_id in self._broker.leases
        self._broker.leases[node_id] = now_ms + lease_ms
        channels = self._broker.node_channels.setdefault(node_id, set())
        channels.update(added)
        channels.difference_update(removed)
        return existed

    async def node_leave(self, node_id: str) -> None:
        self._broker.leases.pop(node_id, None)
        self._broker.node_channels.pop(node_id, None)

    async def reap_dead_nodes(self, node_id: str, now_ms: int) -> list[str]:
        self._require_started()
        dead = [n for n, exp in self._broker.leases.items() if exp < now_ms and n != node_id]
        for dead_id in dead:
            prefix = dead_id + "."
            for channel in self._broker.node_channels.pop(dead_id, set()):
                state = self._broker.presence.get(channel)
                if state is None:
                    continue
                for conn_id in [c for c in state.conns if c.startswith(prefix)]:
                    self._broker.leave(channel, conn_id, True)
            del self._broker.leases[dead_id]
        return dead


def from_url(url: str, **options: object) -> MemoryEngine:
    """``memory://``: a fresh single-node engine. Options are accepted and ignored."""
    return MemoryEngine()


if TYPE_CHECKING:  # mypy proves the memory engine keeps the whole contract
    _conforms: Engine = MemoryEngine()
