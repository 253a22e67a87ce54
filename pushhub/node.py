"""The node: the one place where local connections (the hub) meet the engine.

The node owns the rule "subscribe upstream on the first local subscriber, unsubscribe
after the last" and rolls the hub back when the engine refuses. It is the engine's
``EngineEvents``: each typed event becomes a frame, encoded once for all local
subscribers. Who a client is and what it may do is its ``Session``'s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pushhub import auth, protocol
from pushhub.channels import ChannelRules
from pushhub.config import Settings
from pushhub.connection import Connection, ConnectionState, Outbox, Sender
from pushhub.engine.base import Engine, PresenceCount, PresenceEntry, PresenceMember
from pushhub.errors import (
    EngineError,
    EngineUnavailable,
    ErrorCode,
    ProtocolError,
    unavailable,
)
from pushhub.hub import MAX_HELD, Hub
from pushhub.presence import PresenceManager
from pushhub.presence_feed import PresenceFeed
from pushhub.ratelog import RateLimitedLog
from pushhub.recovery import Held, StreamTracker, Verdict, can_recover, caught_up
from pushhub.session import Session
from pushhub.stream import NO_HISTORY, Position

logger = logging.getLogger("pushhub.node")


def generate_node_id() -> str:
    """A random node id. Connection ids start with it, and anonymous members show their
    connection id to others, so it names no host, process or count (the start-up log
    line ties it to the host and PID for operators)."""
    return "n" + secrets.token_hex(5)


def member_json(member: PresenceMember, max_depth: int = protocol.MAX_JSON_DEPTH) -> dict[str, Any]:
    """A presence member as the socket and the HTTP API show it. Its info was checked
    when it was set; what comes back from the engine is checked again, so a damaged
    value reaches the client as a string rather than as broken JSON."""
    info = protocol.payload_data(member.info, max_depth) if member.info else None
    return {**protocol.member_fields(member.key), "connections": member.connections, "info": info}


def _past(limit: int, counts: PresenceCount | None) -> bool:
    """Whether a channel with ``counts`` is past its member bound ``limit`` (0: none)."""
    return bool(limit) and counts is not None and counts.users > limit


class _Unrecoverable(Exception):
    """A paced replay could not be completed (history trimmed or cleared meanwhile)."""


class _Abandoned(Exception):
    """The subscription being set up was dropped meanwhile (the connection closed, or a
    loss notice told the client to recover again): nothing more is owed to it."""


def _still_wanted(conn: Connection, channel: str) -> bool:
    return conn.state is ConnectionState.OPEN and channel in conn.channels


@dataclass(slots=True)
class _ChannelLock:
    lock: asyncio.Lock
    users: int = 0


class Node:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        hub: Hub | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.hub = hub if hub is not None else Hub()
        self.id = settings.node_id or generate_node_id()
        self.rules = ChannelRules(settings.channels)
        self.presence = PresenceManager(engine, settings, self.rules, self.id, clock)
        self.enforcing = auth.enforcing(settings)
        self.verifier = auth.TokenVerifier(settings) if self.enforcing else None
        self._clock = clock
        self.started_at = time.time()
        self.messages_received = 0
        self.messages_delivered = 0
        #: Raw payloads over max_message_size, dropped rather than sent to every client.
        self.messages_dropped = 0
        #: Failures caught on the delivery path (a bad payload, a failing client): each
        #: one is logged (rate-limited) and skipped; delivery goes on.
        self.delivery_errors = 0
        self._errors = RateLimitedLog(logger)
        self._locks: dict[str, _ChannelLock] = {}
        #: Durable channels held here: the newest position delivered, to detect loss.
        self.streams = StreamTracker()
        #: Join and leave events gathered per channel until the next presence tick.
        self.presence_feed = PresenceFeed(
            lambda channel: self.rules.options(channel).join_leave_max_members,
            settings.outbound_queue_bytes // 4,
            # Counts of a large channel: at most once a second (or once a tick, if longer).
            count_every=max(1, round(1.0 / settings.presence_tick)),
        )
        self._tick: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Connections whose close was decided -> the task releasing what they held.
        self._releasing: dict[Connection, asyncio.Task[None]] = {}
        self._outbox = Outbox(self._errors)
        self._depth = settings.max_json_depth
        #: The most bytes of messages in one history or presence reply, or one page of
        #: a recovery replay: a quarter of the outbound queue, so a reply always fits.
        self.reply_bytes = settings.outbound_queue_bytes // 4

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.engine.start(self)
        await self.presence.start()
        self._spawn(self._heartbeat())
        logger.info(
            "node %s started with the %s engine (host %s, pid %d)",
            self.id,
            self.engine.name,
            socket.gethostname(),
            os.getpid(),
        )

    async def close(self) -> None:
        if self._releasing:
            # Connections closed by the shutdown: let their leave events out first.
            await asyncio.wait(tuple(self._releasing.values()), timeout=2)
        if self._tick is not None:
            self._tick.cancel()
        for task in tuple(self._tasks):
            task.cancel()
        await self.presence.close()
        await self.engine.close()
        logger.info("node %s stopped", self.id)

    # -- engine -> clients ----------------------------------------------------------------
    #
    # The node is the engine's ``EngineEvents``. Each handler is supervised: no event,
    # however hostile its payload, and no failing client can raise out of here into the
    # engine's reader; a failure is logged (rate-limited), counted and skipped.

    def on_message(self, channel: str, payload: bytes) -> None:
        """A plain message: checked once, encoded once, offered to every subscriber."""
        self.messages_received += 1
        if not self.hub.has_subscribers(channel):
            return
        try:
            self._deliver(channel, payload)
        except Exception:
            self._delivery_failed(channel)

    def _deliver(self, channel: str, payload: bytes) -> None:
        if len(payload) > self.settings.max_message_size:
            # Only a raw PUBLISH can be this large (every pushhub path checks the size),
            # and a copy of it would sit in every subscriber's socket buffer.
            self.messages_dropped += 1
            self._errors.warning(
                "oversized",
                "dropped a %d-byte payload on %s: over max_message_size (%d)",
                len(payload),
                channel,
                self.settings.max_message_size,
            )
            return
        frame = protocol.message(channel, protocol.payload_data(payload, self._depth))
        self.messages_delivered += self.hub.broadcast(channel, frame)

    def _delivery_failed(self, channel: str) -> None:
        self.delivery_errors += 1
        self._errors.exception("delivery", "delivering a payload on %s failed", channel)

    def on_durable(self, channel: str, position: Position, payload: bytes) -> None:
        """A durable message: delivered with its position, unless it is one already
        delivered; a gap makes the channel's subscribers recover."""
        self.messages_received += 1
        if not self.hub.has_subscribers(channel):
            return
        try:
            self._on_durable(channel, position, payload)
        except Exception:
            self._delivery_failed(channel)

    def _on_durable(self, channel: str, position: Position, payload: bytes) -> None:
        offset, epoch = position.offset, position.epoch
        last = self.streams.get(channel)
        verdict = self.streams.observe(channel, offset, epoch)
        if verdict is Verdict.DUPLICATE:
            return  # already delivered, or older than the subscribers' position
        if verdict is Verdict.GAP:
            # A message was lost between Redis and this node (or the history was
            # cleared): the subscribers recover from the stream, this one included.
            self._lost(channel, f"had {last}, received {epoch}/{offset}")
            return
        data = protocol.payload_data(payload, self._depth)
        frame = protocol.message(channel, data, offset, epoch)
        self.messages_delivered += self.hub.broadcast(channel, frame, offset)

    def on_join(
        self, channel: str, member: str, info: bytes | None, counts: PresenceCount | None
    ) -> None:
        """A member's first connection joined: shown, in the channel's next presence
        frame, where the channel shows joins and leaves and lets its subscribers read
        presence (past its member bound, as counts)."""
        self._on_presence(channel, counts, protocol.join_event, member, info)

    def on_leave(self, channel: str, member: str, counts: PresenceCount | None) -> None:
        """A member's last connection left (see ``on_join``)."""
        self._on_presence(channel, counts, protocol.leave_event, member)

    def _on_presence(
        self,
        channel: str,
        counts: PresenceCount | None,
        event: Callable[..., str],
        *args: Any,
    ) -> None:
        self.messages_received += 1
        if not self.hub.has_subscribers(channel):
            return
        try:
            options = self.rules.options(channel)
            if options.join_leave and options.presence_read:
                # Past the member bound only the counts go out: no line is encoded.
                past = _past(options.join_leave_max_members, counts)
                self._feed(channel, None if past else event(channel, *args), counts)
        except Exception:
            self._delivery_failed(channel)

    def _feed(self, channel: str, line: str | None, counts: PresenceCount | None) -> None:
        """Gather a presence event into its channel's tick (see presence_feed.py)."""
        users, connections = (counts.users, counts.connections) if counts else (-1, -1)
        if self.presence_feed.add(channel, line, users, connections) and self._tick is None:
            self._tick = asyncio.get_running_loop().call_later(
                self.settings.presence_tick, self._flush_presence
            )

    def _flush_presence(self) -> None:
        """One tick: each channel's gathered presence events as one frame."""
        self._tick = None
        for channel, frame in self.presence_feed.flush():
            try:
                self.messages_delivered += self.hub.broadcast(channel, frame)
            except Exception:
                self._delivery_failed(channel)
        if len(self.presence_feed):  # counts held back for a later tick
            self._tick = asyncio.get_running_loop().call_later(
                self.settings.presence_tick, self._flush_presence
            )

    def _lost(self, channel: str, why: str) -> None:
        """Tell every local subscriber of ``channel`` to resubscribe from its position."""
        logger.warning("lost messages on %s (%s); subscribers must recover", channel, why)
        self.streams.forget(channel)
        conns = self.hub.subscribers(channel)
        frame = protocol.unsubscribed(channel, None, reason="recover")
        for conn in conns:
            self.hub.remove(conn, channel)
            self._drop_held(conn, channel)
            conn.send(frame)
        self._spawn(self._release_channel(channel, conns))

    async def _release_channel(self, channel: str, conns: Sequence[Connection]) -> None:
        for conn in conns:
            await self.presence.leave(channel, conn.id)
        async with self._channel_lock(channel):
            if not self.hub.has_subscribers(channel):
                self.presence_feed.forget(channel)
                await self.engine.unsubscribe(channel)

    async def _heartbeat(self) -> None:
        """Send every client a ``ping`` event each ``ping_interval``: browsers cannot see
        WebSocket pings, and this is how a page notices a connection that went dead."""
        frame = protocol.server_ping()
        while True:
            await asyncio.sleep(self.settings.ping_interval)
            for conn in self.hub.connections():
                try:
                    conn.send(frame)
                except Exception:
                    self.delivery_errors += 1
                    self._errors.exception("ping", "pinging %s failed", conn.id)

    def on_resubscribed(self) -> None:
        """The engine is back after an outage: check the durable channels held here."""
        self._spawn(self._check_positions())

    async def _check_positions(self) -> None:
        """After an engine outage: any durable channel that moved on meanwhile lost
        messages on their way here, so its subscribers recover."""
        channels = [c for c in self.streams.channels() if self.hub.has_subscribers(c)]
        if not channels:
            return
        try:
            positions = await self.engine.stream_positions(channels)
        except EngineError as exc:
            logger.warning("cannot check durable channels after reconnecting: %s", exc)
            return
        for channel, position in zip(channels, positions, strict=True):
            if self.streams.moved(channel, position):
                last = self.streams.get(channel)
                self._lost(channel, f"had {last}, the stream is at {position} after reconnecting")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sessions ------------------------------------------------------------------------

    def open(
        self,
        sender: Sender,
        ip: str | None = None,
        on_release: Callable[[str], None] | None = None,
    ) -> Session:
        """A new session for an accepted socket. With tokens enforced, it must
        authenticate within ``auth_timeout`` or be closed. ``on_release(ip)`` is called
        once when the connection's close is decided (the transport's per-IP slot); pass
        one shared callable, not one made per connection."""
        # Random, not a counter: anonymous members show their connection id to others.
        session = Session(self, f"{self.id}.{secrets.token_urlsafe(9)}", sender, ip, on_release)
        self.hub.register(session.conn)
        return session

    @property
    def outbox(self) -> Outbox:
        """The flush shared by every connection of this node."""
        return self._outbox

    def clock(self) -> float:
        """Now, in seconds since the epoch (injected in tests)."""
        return self._clock()

    def closing(self, session: Session) -> None:
        """A session's close was decided (by the server, or the socket is gone):
        release what its connection holds now, not when a peer that stopped reading
        lets go of its socket. It leaves the hub on the next loop step (the close may
        have been decided inside ``Hub.broadcast``, which is iterating over the
        channel's subscribers); presence, upstream subscriptions and the user's slot
        follow in one task."""
        asyncio.get_running_loop().call_soon(self._detach, session)

    def _detach(self, session: Session) -> None:
        """Take the session's connection out of the hub and start releasing. Once."""
        conn = session.conn
        if not self.hub.holds(conn):
            return
        self.hub.unregister(conn)
        channels = tuple(conn.channels)
        for channel in channels:
            self.hub.remove(conn, channel)
        conn.held = None
        task = asyncio.get_running_loop().create_task(self._release(session, channels))
        self._releasing[conn] = task
        task.add_done_callback(lambda _: self._releasing.pop(conn, None))

    async def _release(self, session: Session, channels: tuple[str, ...]) -> None:
        try:
            for channel in channels:
                await self.presence.leave(channel, session.conn.id)
                await self._unsubscribe_if_unused(channel)
            await session.release_user()
        except Exception:
            self._errors.exception("release", "releasing connection %s failed", session.conn.id)

    async def disconnect(self, session: Session) -> None:
        """The socket is gone: make sure everything the session held is released."""
        conn = session.conn
        conn.closed()  # decides the close if the server had not
        self._detach(session)  # now, if the step scheduled for it has not run yet
        task = self._releasing.get(conn)
        if task is not None:
            await asyncio.shield(task)
        await conn.wait_closed()

    # -- subscriptions ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _channel_lock(self, channel: str) -> AsyncIterator[None]:
        entry = self._locks.get(channel)
        if entry is None:
            entry = self._locks[channel] = _ChannelLock(asyncio.Lock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[channel]

    async def subscribe(
        self, conn: Connection, command: protocol.Subscribe, member: PresenceEntry
    ) -> None:
        """Subscribe ``conn`` to ``command.channel`` (its session checked that it may)
        and answer the command: "subscribed" once the engine delivers the channel here,
        ``member`` is present where presence is on, and a durable channel's position is
        read (and, with ``command.since``, what the client missed is replayed)."""
        channel, since = command.channel, command.since
        async with self._channel_lock(channel):
            if not self.hub.has_subscribers(channel):
                try:
                    await self.engine.subscribe(channel)
                except EngineUnavailable as exc:
                    logger.warning("subscribe to %s failed: %s", channel, exc)
                    raise unavailable() from None
            if conn.state is not ConnectionState.OPEN:
                # The client went away while the engine answered: undo, answer nobody.
                if not self.hub.has_subscribers(channel):
                    await self.engine.unsubscribe(channel)
                return
            options = self.rules.options(channel)
            setup = options.durable or options.presence
            if setup:
                # Hold live frames from now on, until the subscription is set up.
                if conn.held is None:
                    conn.held = {}
                conn.held[channel] = Held(MAX_HELD, self.settings.outbound_queue_bytes)
            # Register and confirm in one step, with no await between, so that no
            # message of this channel can reach the client before "subscribed".
            self.hub.add(conn, channel)
            if not setup:
                recovered = False if since is not None else None
                conn.send(protocol.subscribed(channel, command.id, None, recovered))
                return
        # Presence first, so that "subscribed" means "the others can see you" too; the
        # client's own join event is among the held frames.
        if options.presence:
            await self.presence.join(channel, member)
        if options.durable:
            await self._catch_up(conn, channel, command.id, since)
        else:
            recovered = False if since is not None else None
            conn.send(protocol.subscribed(channel, command.id, None, recovered))
            self._release_held(conn, channel, None)

    def _release_held(self, conn: Connection, channel: str, after: int | None) -> None:
        """Send the frames held during set-up, skipping durable ones at or below ``after``."""
        held = self._drop_held(conn, channel)
        for frame in held.after(after) if held is not None else ():
            conn.send(frame)

    @staticmethod
    def _drop_held(conn: Connection, channel: str) -> Held | None:
        """Take ``channel``'s held frames off the connection (no dict left behind)."""
        held = conn.held.pop(channel, None) if conn.held is not None else None
        if conn.held is not None and not conn.held:
            conn.held = None
        return held

    async def _catch_up(
        self,
        conn: Connection,
        channel: str,
        request_id: int | None,
        since: Position | None,
    ) -> None:
        """Read the position of a durable channel (and, with ``since``, replay what the
        client missed, paced to what it reads); send "subscribed", then what arrived
        meanwhile, by offset."""
        # Recovery is a read of the history: where that is not readable, a client could
        # claim offset 0 and read it all, so it recovers nothing.
        readable = self.rules.options(channel).history_read
        recovered: bool | None
        try:
            if since is not None and readable:
                position, recovered = await self._recover(conn, channel, since)
            else:
                (found,) = await self.engine.stream_positions([channel])
                position, recovered = found or NO_HISTORY, None if since is None else False
            if not _still_wanted(conn, channel):
                raise _Abandoned
        except _Abandoned:
            if conn.state is not ConnectionState.OPEN:
                return  # closed: nothing more is owed
            # A loss notice ("unsubscribed", reason "recover") came during the set-up:
            # answer the request so the client subscribes again from its position.
            raise ProtocolError(
                ErrorCode.UNAVAILABLE,
                "the channel lost messages while this subscription was set up; "
                "subscribe again from your position",
            ) from None
        except EngineError as exc:
            logger.warning("reading the position of %s failed: %s", channel, exc)
            self._drop_held(conn, channel)
            await self.unsubscribe(conn, channel)
            raise unavailable() from None
        conn.send(protocol.subscribed(channel, request_id, position, recovered))
        self._release_held(conn, channel, position.offset)
        if self.hub.has_subscribers(channel):
            self.streams.start(channel, position)

    async def _recover(
        self, conn: Connection, channel: str, since: Position
    ) -> tuple[Position, bool]:
        """Replay what the client missed after ``since``, page by page as its queue
        drains, so a replay of any size within ``recovery_max`` completes without ever
        taking the client over its outbound limit. Returns the position to announce
        and whether the gap was closed.

        Live messages keep arriving meanwhile and are held (``Held``); if more arrive
        than may be held, the oldest held are dropped and the replay reads on from the
        history until it meets what is still held. Every message sent is the next one;
        a gap found midway (the history trimmed or cleared under a long replay) ends it
        with ``recovered: false``, after messages that were all in order.
        """
        cap = self.settings.recovery_max
        page = self.reply_bytes
        seen = self._overflows(conn, channel)
        read = await self.engine.read_history(channel, since.offset, cap, max_bytes=page)
        if not can_recover(since, read, cap):
            return read.position, False
        epoch, last, sent = read.position.epoch, since.offset, 0
        target = read.position.offset
        try:
            while True:
                if not _still_wanted(conn, channel):
                    raise _Abandoned
                for m in read.messages:
                    if m.offset != last + 1:
                        raise _Unrecoverable
                    data = protocol.payload_data(m.data, self._depth)
                    conn.send(protocol.message(channel, data, m.offset, epoch))
                    last, sent = m.offset, sent + 1
                target = max(target, read.position.offset)
                if caught_up(self._held(conn, channel), last, target, seen):
                    return Position(last, epoch), True
                if sent >= 2 * cap or not await conn.wait_below(page):
                    # Not keeping up with the live stream, or gone: stop honestly.
                    raise _Unrecoverable
                seen = self._overflows(conn, channel)
                read = await self.engine.read_history(channel, last, cap, max_bytes=page)
                if read.position.epoch != epoch or not read.messages:
                    raise _Unrecoverable
        except _Unrecoverable:
            (found,) = await self.engine.stream_positions([channel])
            return found or NO_HISTORY, False

    @staticmethod
    def _held(conn: Connection, channel: str) -> Held | None:
        return conn.held.get(channel) if conn.held is not None else None

    def _overflows(self, conn: Connection, channel: str) -> int:
        held = self._held(conn, channel)
        return held.overflows if held is not None else 0

    async def unsubscribe(self, conn: Connection, channel: str) -> None:
        """Take ``conn`` off ``channel`` here, in presence and, after the last local
        subscriber, upstream."""
        last = self.hub.remove(conn, channel)
        await self.presence.leave(channel, conn.id)
        if last:
            await self._unsubscribe_if_unused(channel)

    async def _unsubscribe_if_unused(self, channel: str) -> None:
        if self.hub.has_subscribers(channel):
            return
        async with self._channel_lock(channel):
            if not self.hub.has_subscribers(channel):
                self.streams.forget(channel)
                self.presence_feed.forget(channel)
                await self.engine.unsubscribe(channel)

    # -- presence ------------------------------------------------------------------------

    def require_presence(self, channel: str) -> None:
        if not self.rules.options(channel).presence:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"presence is not enabled for {channel!r}")

    async def presence_page(
        self, channel: str, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of members and the cursor of the next page (None at the end)."""
        self.require_presence(channel)
        try:
            page = await self.engine.presence_page(channel, cursor, limit)
        except EngineError:
            raise unavailable() from None
        members: list[tuple[dict[str, Any], str]] = []
        size = 0
        for m in page:
            size += len(m.key) + len(m.info or b"") + 64
            if members and size > self.reply_bytes:
                # Bounded in bytes as well as count: the cursor continues from here.
                return [j for j, _ in members], protocol.encode_cursor(members[-1][1])
            members.append((member_json(m, self._depth), m.key))
        next_cursor = protocol.encode_cursor(page[-1].key) if len(page) == limit else None
        return [j for j, _ in members], next_cursor

    # -- publishing ------------------------------------------------------------------------

    async def publish(
        self, channels: Sequence[str], data: Any, idempotency_key: str | None = None
    ) -> list[Position | None]:
        """Publish ``data`` to ``channels`` through the engine, reaching every node.

        Returns each channel's position: the offset and epoch on durable channels, None
        on the others. An idempotency key applies per durable channel.
        """
        try:
            payload = protocol.encode_data(data)
        except orjson.JSONEncodeError as exc:  # every path checks depth; belt and braces
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"data cannot be encoded: {exc}") from None
        durable = {c for c in channels if self.rules.options(c).durable}
        plain = [c for c in channels if c not in durable]
        if idempotency_key is not None and plain:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"idempotency_key needs durable channels; {plain[0]!r} is not one",
            )
        if len(plain) == 1:
            await self.engine.publish(plain[0], payload)
        elif plain:
            await self.engine.publish_many((channel, payload) for channel in plain)
        positions: dict[str, Position] = {}
        for channel in channels:
            if channel in durable:
                positions[channel] = await self.engine.publish_durable(
                    channel, payload, idempotency_key
                )
        return [positions.get(c) for c in channels]

    # -- history ---------------------------------------------------------------------------

    async def history(
        self,
        channel: str,
        since: int | None,
        limit: int,
        reverse: bool,
    ) -> tuple[Position, list[dict[str, Any]], int | None]:
        """Up to ``limit`` (at most ``recovery_max``) messages and at most a quarter of
        ``outbound_queue_bytes`` of them, the position, and the ``since`` that continues
        the read (None when there is nothing more)."""
        if not self.rules.options(channel).durable:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{channel!r} is not a durable channel")
        limit = min(limit, self.settings.recovery_max)
        try:
            read = await self.engine.read_history(
                channel, since, limit, reverse, max_bytes=self.reply_bytes
            )
        except EngineError:
            raise unavailable() from None
        messages = [
            {"offset": m.offset, "data": protocol.payload_data(m.data, self._depth)}
            for m in read.messages
        ]
        next_since = None
        if read.messages:
            end = read.messages[-1].offset
            more = end > read.first if reverse else end < read.position.offset
            next_since = end if more else None
        return read.position, messages, next_since

    async def clear_history(self, channel: str) -> Position:
        if not self.rules.options(channel).durable:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{channel!r} is not a durable channel")
        try:
            return await self.engine.clear_history(channel)
        except EngineError:
            raise unavailable() from None

    # -- facades for the HTTP API ------------------------------------------------------------

    async def publish_allowed(self, key: str) -> bool:
        """One HTTP publish against ``key``'s budget, shared by every node."""
        settings = self.settings
        return await self.engine.rate_limit(
            key, settings.publish_rate, settings.publish_burst, self.presence.now_ms()
        )

    async def presence_counts(self, channels: list[str]) -> list[dict[str, int] | None]:
        """Users and connections per channel (None where presence is off), O(1) each."""
        enabled = [c for c in channels if self.rules.options(c).presence]
        try:
            found = await self.engine.presence_counts(enabled)
        except EngineUnavailable:
            raise unavailable() from None
        counts = dict(zip(enabled, found, strict=True))
        return [
            {"users": counts[c].users, "connections": counts[c].connections}
            if c in counts
            else None
            for c in channels
        ]

    async def check(self) -> None:
        """Raise ``EngineUnavailable`` unless the engine can publish and receive now."""
        await self.engine.check()

    @property
    def engine_name(self) -> str:
        return self.engine.name

    # -- introspection ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.id,
            "engine": self.engine.name,
            "uptime": round(time.time() - self.started_at, 3),
            "connections": self.hub.connection_count,
            "channels": self.hub.channel_count,
            "messages_received": self.messages_received,
            "messages_delivered": self.messages_delivered,
            "messages_dropped": self.messages_dropped,
            "delivery_errors": self.delivery_errors,
            "engine_dropped": self.engine.dropped,
        }
