"""The in-process engine: one node, no Redis, the same contract.

Several ``MemoryEngine`` objects that share one ``MemoryBroker`` behave like nodes
sharing one Redis, which lets the contract suite check cross-node behaviour in process.
Events need no envelope here: the broker calls each subscribed engine's events directly,
synchronously, from the operation that caused them (so from the event loop, in order,
and never concurrently).
"""

from __future__ import annotations

import bisect
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pushhub.channels import ChannelRule, ChannelRules
from pushhub.engine.base import (
    Engine,
    EngineEvents,
    HistoryMessage,
    HistoryRead,
    PresenceCount,
    PresenceEntry,
    PresenceMember,
)
from pushhub.errors import EngineError, EngineUnavailable
from pushhub.ratelog import RateLimitedLog
from pushhub.stream import NO_HISTORY, Position

if TYPE_CHECKING:
    from pushhub.config import Settings

logger = logging.getLogger("pushhub.engine.memory")


@dataclass
class _ChannelPresence:
    conns: dict[str, tuple[int, str]] = field(default_factory=dict)  # id -> (expiry, member)
    counts: dict[str, int] = field(default_factory=dict)  # member -> connections
    info: dict[str, bytes | None] = field(default_factory=dict)  # member -> info
    keys: list[str] = field(default_factory=list)  # member keys, sorted


@dataclass
class _Stream:
    epoch: str
    expires: float  # clock seconds
    offset: int = 0
    entries: deque[tuple[int, bytes]] = field(default_factory=deque)


class MemoryBroker:
    """What a Redis server is to the Redis engine: Pub/Sub, presence and streams."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.subscriptions: dict[str, set[MemoryEngine]] = {}
        self.presence: dict[str, _ChannelPresence] = {}
        self.leases: dict[str, int] = {}  # node id -> lease expiry
        self.node_channels: dict[str, set[str]] = {}
        self.streams: dict[str, _Stream] = {}
        self.idempotency: dict[tuple[str, str], tuple[Position, float]] = {}
        self.user_conns: dict[str, dict[str, int]] = {}  # user -> conn id -> expiry
        self.limiters: dict[str, float] = {}  # key -> theoretical arrival time (ms)

    def flush(self) -> None:
        """Lose every piece of state, as FLUSHALL does to Redis (subscriptions survive)."""
        self.presence.clear()
        self.leases.clear()
        self.node_channels.clear()
        self.streams.clear()
        self.idempotency.clear()
        self.user_conns.clear()
        self.limiters.clear()

    # The stream operations mirror pushhub/engine/lua/durable.lua.

    def stream(self, channel: str, ttl: float) -> _Stream:
        now = self.clock()
        stream = self.streams.get(channel)
        if stream is None or stream.expires <= now:
            stream = self.streams[channel] = _Stream(secrets.token_hex(6), now + ttl)
        return stream

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
                info = state.info[entry.member]
                if info is not None and not info.startswith(b"{"):
                    info = None  # as Redis shows it: anything but an object is no info
                counts = PresenceCount(len(state.keys), len(state.conns))
                for events in self.receivers(channel):
                    try:
                        events.on_join(channel, entry.member, info, counts)
                    except Exception:
                        _handler_failed(events)

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
                counts = PresenceCount(len(state.keys), len(state.conns))
                for events in self.receivers(channel):
                    try:
                        events.on_leave(channel, member, counts)
                    except Exception:
                        _handler_failed(events)
        if not state.conns:
            del self.presence[channel]

    def expire(self, channel: str, now: int, emit: bool) -> None:
        state = self.presence.get(channel)
        if state is None:
            return
        for conn_id in [c for c, (exp, _) in state.conns.items() if exp < now]:
            self.leave(channel, conn_id, emit)

    def receivers(self, channel: str) -> Iterator[EngineEvents]:
        """The events of each started engine subscribed to ``channel``, in turn."""
        for engine in tuple(self.subscriptions.get(channel, ())):
            if engine.events is not None:
                yield engine.events

    def deliver(self, channel: str, payload: bytes) -> None:
        for events in self.receivers(channel):
            try:
                events.on_message(channel, payload)
            except Exception:
                _handler_failed(events)

    def deliver_durable(self, channel: str, position: Position, payload: bytes) -> None:
        for events in self.receivers(channel):
            try:
                events.on_durable(channel, position, payload)
            except Exception:
                _handler_failed(events)


_errors = RateLimitedLog(logger)


def _handler_failed(events: EngineEvents) -> None:
    """Supervision: what a handler raised is logged (rate-limited), never raised into
    the operation that caused the event."""
    _errors.exception("events", "an engine event handler (%s) raised", type(events).__name__)


class MemoryEngine:
    name = "memory"
    #: Nothing here is ever unreadable (see ``Broker.dropped``).
    dropped = 0

    def __init__(
        self,
        broker: MemoryBroker | None = None,
        rules: tuple[ChannelRule, ...] = (),
        idempotency_ttl: float = 300.0,
    ) -> None:
        self._broker = broker if broker is not None else MemoryBroker()
        self._rules = ChannelRules(rules)
        self._idempotency_ttl = idempotency_ttl
        #: Where this engine's events go; None until started and after closing.
        self.events: EngineEvents | None = None
        self._channels: set[str] = set()

    async def start(self, events: EngineEvents) -> None:
        # Memory never disconnects, so it never resubscribes.
        self.events = events

    async def close(self) -> None:
        for channel in tuple(self._channels):
            await self.unsubscribe(channel)
        self.events = None

    def _require_started(self) -> None:
        if self.events is None:
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
            state = self._broker.presence.get(channel)
            conns = state.conns if state is not None else {}
            lost = []
            for conn_id in conn_ids:
                current = conns.get(conn_id)
                if current is None:
                    lost.append(conn_id)
                else:
                    conns[conn_id] = (now_ms + ttl_ms, current[1])
            self._broker.expire(channel, now_ms, emit)
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
                emit = self._rules.options(channel).join_leave
                for conn_id in [c for c in state.conns if c.startswith(prefix)]:
                    self._broker.leave(channel, conn_id, emit)
            del self._broker.leases[dead_id]
        return dead

    # -- durable channels --------------------------------------------------------------

    async def publish_durable(
        self, channel: str, payload: bytes, idempotency_key: str | None = None
    ) -> Position:
        self._require_started()
        options = self._rules.options(channel)
        if not options.durable:
            raise EngineError(f"{channel!r} is not a durable channel")
        broker, now = self._broker, self._broker.clock()
        if idempotency_key:
            seen = broker.idempotency.get((channel, idempotency_key))
            if seen is not None and seen[1] > now:
                return seen[0]
        stream = broker.stream(channel, options.history_ttl)
        stream.offset += 1
        stream.entries.append((stream.offset, payload))
        while len(stream.entries) > options.history_size:
            stream.entries.popleft()
        stream.expires = now + options.history_ttl
        position = Position(stream.offset, stream.epoch)
        broker.deliver_durable(channel, position, payload)
        if idempotency_key:
            broker.idempotency[(channel, idempotency_key)] = (position, now + self._idempotency_ttl)
        return position

    async def read_history(
        self,
        channel: str,
        after: int | None,
        limit: int,
        reverse: bool = False,
        max_bytes: int = 0,
    ) -> HistoryRead:
        self._require_started()
        stream = self._broker.streams.get(channel)
        if stream is None or stream.expires <= self._broker.clock():
            return HistoryRead(NO_HISTORY, 0, [])  # a read creates nothing
        entries = list(stream.entries)
        if reverse:
            chosen = [e for e in reversed(entries) if after is None or e[0] < after][:limit]
        else:
            chosen = [e for e in entries if after is None or e[0] > after][:limit]
        if max_bytes:
            used = 0
            for i, (_, data) in enumerate(chosen):
                if i and used + len(data) > max_bytes:
                    chosen = chosen[:i]
                    break
                used += len(data)
        first = entries[0][0] if entries else 0
        return HistoryRead(
            Position(stream.offset, stream.epoch),
            first,
            [HistoryMessage(offset, data) for offset, data in chosen],
        )

    async def clear_history(self, channel: str) -> Position:
        self._require_started()
        self._broker.streams.pop(channel, None)
        stream = self._broker.stream(channel, self._rules.options(channel).history_ttl)
        return Position(stream.offset, stream.epoch)

    async def stream_positions(self, channels: Sequence[str]) -> list[Position | None]:
        self._require_started()
        now = self._broker.clock()
        positions: list[Position | None] = []
        for channel in channels:
            stream = self._broker.streams.get(channel)
            if stream is not None and stream.expires > now:
                positions.append(Position(stream.offset, stream.epoch))
            else:
                positions.append(None)
        return positions

    # -- limits shared across nodes (mirrors pushhub/engine/lua/limits.lua) ------------

    async def acquire_user_connection(
        self, user: str, conn_id: str, now_ms: int, ttl_ms: int, limit: int
    ) -> bool:
        self._require_started()
        conns = self._broker.user_conns.setdefault(user, {})
        for stale in [c for c, exp in conns.items() if exp < now_ms]:
            del conns[stale]
        if conn_id not in conns and limit > 0 and len(conns) >= limit:
            return False
        conns[conn_id] = now_ms + ttl_ms
        return True

    async def refresh_user_connections(
        self, items: Sequence[tuple[str, Sequence[str]]], now_ms: int, ttl_ms: int
    ) -> None:
        self._require_started()
        for user, conn_ids in items:
            conns = self._broker.user_conns.get(user, {})
            for conn_id in conn_ids:
                if conn_id in conns:
                    conns[conn_id] = now_ms + ttl_ms

    async def release_user_connection(self, user: str, conn_id: str) -> None:
        conns = self._broker.user_conns.get(user)
        if conns is not None:
            conns.pop(conn_id, None)
            if not conns:
                del self._broker.user_conns[user]

    async def rate_limit(self, key: str, rate: float, burst: int, now_ms: int) -> bool:
        self._require_started()
        interval = 1000.0 / rate
        tat = max(self._broker.limiters.get(key, now_ms), now_ms)
        new_tat = tat + interval
        if new_tat - now_ms > interval * burst:
            return False
        self._broker.limiters[key] = new_tat
        return True


def from_url(url: str, settings: Settings) -> MemoryEngine:
    """``memory://``: a fresh single-node engine."""
    return MemoryEngine(rules=settings.channels, idempotency_ttl=settings.idempotency_ttl)


if TYPE_CHECKING:  # mypy proves the memory engine keeps the whole contract
    _conforms: Engine = MemoryEngine()
