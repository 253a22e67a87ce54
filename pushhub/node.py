"""The node: the one place where local connections (the hub) meet the engine.

The node owns the rule "subscribe upstream on the first local subscriber, unsubscribe
after the last" and rolls the hub back when the engine refuses. It turns engine payloads
into frames, encoding each message once for all local subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
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
from pushhub.engine.base import (
    Engine,
    HistoryRead,
    PresenceEntry,
    PresenceMember,
    StreamPosition,
)
from pushhub.errors import (
    CloseCode,
    EngineError,
    EngineUnavailable,
    ErrorCode,
    ProtocolError,
    unavailable,
)
from pushhub.hub import Hub
from pushhub.presence import PresenceManager

logger = logging.getLogger("pushhub.node")


def generate_node_id() -> str:
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:24] or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def can_recover(since: protocol.Position, read: HistoryRead, cap: int) -> bool:
    """Whether ``read`` closes the gap after ``since`` exactly: all of it, or nothing."""
    top = read.position.offset
    if since.epoch != read.position.epoch or since.offset > top:
        return False
    missed = top - since.offset
    if missed == 0:
        return True
    if missed > cap or read.first == 0 or read.first > since.offset + 1:
        return False
    got = [m.offset for m in read.messages[:missed]]
    return got == list(range(since.offset + 1, top + 1))


def member_json(member: PresenceMember) -> dict[str, Any]:
    """A presence member as the socket and the HTTP API show it."""
    return {
        **protocol.member_fields(member.key),
        "connections": member.connections,
        "info": orjson.Fragment(member.info) if member.info else None,
    }


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
        self._locks: dict[str, _ChannelLock] = {}
        self._ids = itertools.count(1)
        #: Durable channels held here -> the newest position seen, to detect loss.
        self._positions: dict[str, StreamPosition] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outbox = Outbox()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.engine.start(self._on_payload, self._on_resubscribe)
        await self.presence.start()
        self._spawn(self._heartbeat())
        logger.info("node %s started with the %s engine", self.id, self.engine.name)

    async def close(self) -> None:
        for task in tuple(self._tasks):
            task.cancel()
        await self.presence.close()
        await self.engine.close()
        logger.info("node %s stopped", self.id)

    # -- engine -> clients ----------------------------------------------------------------

    def _on_payload(self, channel: str, payload: bytes) -> None:
        self.messages_received += 1
        if not self.hub.has_subscribers(channel):
            return
        if payload.startswith(protocol.ENVELOPE):
            parsed = protocol.parse_envelope(payload)
            if parsed is None:
                logger.debug("dropped an unreadable envelope on %s", channel)
                return
            header, body = parsed
            if header.get("t") == "msg" and body is not None:
                self._on_durable(channel, header, body)
                return
            options = self.rules.options(channel)
            if not options.join_leave or not options.presence_read:
                return
            event = protocol.event_from_envelope(channel, payload)
            if event is not None:
                self.messages_delivered += self.hub.broadcast(channel, event)
            return
        frame = protocol.message(channel, protocol.decode_payload(payload))
        self.messages_delivered += self.hub.broadcast(channel, frame)

    def _on_durable(self, channel: str, header: dict[str, Any], body: bytes) -> None:
        offset, epoch = header.get("o"), header.get("e")
        if type(offset) is not int or not isinstance(epoch, str):
            logger.debug("dropped a durable envelope without a position on %s", channel)
            return
        last = self._positions.get(channel)
        if last is not None:
            if last.epoch == epoch and offset <= last.offset:
                return  # already delivered, or older than the subscribers' position
            if last.epoch != epoch or offset != last.offset + 1:
                # A message was lost between Redis and this node (or the history was
                # cleared): the subscribers recover from the stream, this one included.
                self._lost(channel, f"had {last.epoch}/{last.offset}, received {epoch}/{offset}")
                return
        self._positions[channel] = StreamPosition(offset, epoch)
        frame = protocol.message(channel, protocol.decode_payload(body), offset, epoch)
        self.messages_delivered += self.hub.broadcast(channel, frame, offset)

    def _lost(self, channel: str, why: str) -> None:
        """Tell every local subscriber of ``channel`` to resubscribe from its position."""
        logger.warning("lost messages on %s (%s); subscribers must recover", channel, why)
        self._positions.pop(channel, None)
        conns = self.hub.subscribers(channel)
        frame = protocol.unsubscribed(channel, None, reason="recover")
        for conn in conns:
            self.hub.remove(conn, channel)
            if conn.pending is not None:
                conn.pending.pop(channel, None)
            conn.send(frame)
        self._spawn(self._release(channel, conns))

    async def _release(self, channel: str, conns: Sequence[Connection]) -> None:
        for conn in conns:
            await self.presence.leave(channel, conn.id)
        async with self._channel_lock(channel):
            if not self.hub.has_subscribers(channel):
                await self.engine.unsubscribe(channel)

    async def _heartbeat(self) -> None:
        """Send every client a ``ping`` event each ``ping_interval``: browsers cannot see
        WebSocket pings, and this is how a page notices a connection that went dead."""
        frame = protocol.server_ping()
        while True:
            await asyncio.sleep(self.settings.ping_interval)
            for conn in self.hub.connections():
                conn.send(frame)

    def _on_resubscribe(self) -> None:
        self._spawn(self._check_positions())

    async def _check_positions(self) -> None:
        """After an engine outage: any durable channel that moved on meanwhile lost
        messages on their way here, so its subscribers recover."""
        channels = [c for c in self._positions if self.hub.has_subscribers(c)]
        if not channels:
            return
        try:
            positions = await self.engine.stream_positions(channels)
        except EngineError as exc:
            logger.warning("cannot check durable channels after reconnecting: %s", exc)
            return
        for channel, position in zip(channels, positions, strict=True):
            last = self._positions.get(channel)
            if position is None or position != last:
                self._lost(channel, f"had {last}, the stream is at {position} after reconnecting")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connections ---------------------------------------------------------------------

    def open(self, sender: Sender, ip: str | None = None) -> Connection:
        """A new connection for an accepted socket, its writer started. With tokens
        enforced, it must authenticate within ``auth_timeout`` or be closed."""
        conn = Connection(
            f"{self.id}.{next(self._ids)}",
            sender,
            self.settings.outbound_queue_bytes,
            self._outbox,
        )
        conn.ip = ip
        self.hub.register(conn)
        if self.enforcing:
            conn.timer = asyncio.get_running_loop().call_later(
                self.settings.auth_timeout, self._auth_deadline, conn
            )
        return conn

    def _auth_deadline(self, conn: Connection) -> None:
        if not conn.identified:
            conn.close(CloseCode.AUTH_TIMEOUT, "no connect frame in time")

    def _token_expired(self, conn: Connection) -> None:
        conn.send(protocol.error(ProtocolError(ErrorCode.TOKEN_EXPIRED, "the token expired")))
        conn.close(CloseCode.TOKEN_EXPIRED, "token expired", flush=True)

    def _arm_expiry(self, conn: Connection, expires_at: int) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
        delay = max(0.0, expires_at + self.settings.jwt_leeway - self._clock())
        conn.timer = asyncio.get_running_loop().call_later(delay, self._token_expired, conn)
        conn.expires_at = expires_at

    async def disconnect(self, conn: Connection) -> None:
        """Release everything ``conn`` holds. Call once, when its socket is gone."""
        conn.closed()
        self.hub.unregister(conn)
        for channel in tuple(conn.channels):
            await self._leave(conn, channel)
        if self.enforcing and conn.user is not None:
            with contextlib.suppress(EngineError):
                await self.engine.release_user_connection(conn.user, conn.id)
            self.presence.untrack_user(conn.user, conn.id)
        await conn.wait_closed()

    async def handle(self, conn: Connection, text: str) -> None:
        """Handle one client text frame. Errors are answered, never raised."""
        try:
            command = protocol.parse(text)
        except ProtocolError as exc:
            conn.send(protocol.error(exc))
            return
        await self.execute(conn, command)

    async def execute(self, conn: Connection, command: protocol.Command) -> None:
        """Carry out one parsed command. Errors are answered, never raised."""
        try:
            if self.enforcing and not conn.identified and not isinstance(command, protocol.Connect):
                conn.send(
                    protocol.error(
                        ProtocolError(
                            ErrorCode.UNAUTHORIZED, "send connect with a token first", command.id
                        )
                    )
                )
                conn.close(CloseCode.UNAUTHORIZED, "not authenticated", flush=True)
                return
            if isinstance(command, protocol.Subscribe):
                await self.subscribe(
                    conn, command.channel, command.id, command.since, command.token
                )
            elif isinstance(command, protocol.Unsubscribe):
                await self.unsubscribe(conn, command.channel, command.id)
            elif isinstance(command, protocol.Ping):
                conn.send(protocol.pong(command.id))
            elif isinstance(command, protocol.Connect):
                await self.identify(conn, command)
            elif isinstance(command, protocol.Refresh):
                self.refresh(conn, command)
            elif isinstance(command, protocol.Presence):
                await self.presence_query(conn, command)
            elif isinstance(command, protocol.Publish):
                await self.client_publish(conn, command)
            else:
                await self.history_query(conn, command)
        except auth.AuthError as exc:
            conn.send(protocol.error(exc))
            conn.close(exc.close_code, exc.message[:100], flush=True)
        except ProtocolError as exc:
            conn.send(protocol.error(exc))

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
        self,
        conn: Connection,
        channel: str,
        request_id: int | None,
        since: protocol.Position | None = None,
        token: str | None = None,
    ) -> None:
        if channel in conn.channels:
            raise ProtocolError(ErrorCode.ALREADY_SUBSCRIBED, "already subscribed", request_id)
        if len(conn.channels) >= self.settings.max_subscriptions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self.settings.max_subscriptions} subscriptions per connection",
                request_id,
            )
        self.check_subscribe(conn, channel, token, request_id)
        async with self._channel_lock(channel):
            if not self.hub.has_subscribers(channel):
                try:
                    await self.engine.subscribe(channel)
                except EngineUnavailable as exc:
                    logger.warning("subscribe to %s failed: %s", channel, exc)
                    raise unavailable(request_id) from None
            if conn.state is not ConnectionState.OPEN:
                # The client went away while the engine answered: undo, answer nobody.
                if not self.hub.has_subscribers(channel):
                    await self.engine.unsubscribe(channel)
                return
            options = self.rules.options(channel)
            setup = options.durable or options.presence
            if setup:
                # Hold live frames from now on, until the subscription is set up.
                if conn.pending is None:
                    conn.pending = {}
                conn.pending[channel] = []
            # Register and confirm in one step, with no await between, so that no
            # message of this channel can reach the client before "subscribed".
            self.hub.add(conn, channel)
            if not setup:
                recovered = False if since is not None else None
                conn.send(protocol.subscribed(channel, request_id, None, recovered))
                return
        # Presence first, so that "subscribed" means "the others can see you" too; the
        # client's own join event is among the held frames.
        if options.presence:
            entry = PresenceEntry(conn.id, protocol.member_key(conn.user, conn.id), conn.info)
            await self.presence.join(channel, entry)
        if options.durable:
            await self._catch_up(conn, channel, request_id, since)
        else:
            recovered = False if since is not None else None
            conn.send(protocol.subscribed(channel, request_id, None, recovered))
            self._release_held(conn, channel, None)

    def _release_held(self, conn: Connection, channel: str, after: int | None) -> None:
        """Send the frames held during set-up, skipping durable ones at or below ``after``."""
        held = conn.pending.pop(channel, []) if conn.pending is not None else []
        if conn.pending is not None and not conn.pending:
            conn.pending = None
        for offset, frame in held:
            if offset is None or after is None or offset > after:
                conn.send(frame)

    async def _catch_up(
        self,
        conn: Connection,
        channel: str,
        request_id: int | None,
        since: protocol.Position | None,
    ) -> None:
        """Read the position (and, with ``since``, the missed messages) of a durable
        channel; send the replay, "subscribed", then what arrived meanwhile, by offset."""
        cap = self.settings.recovery_max
        try:
            if since is None:
                read = await self.engine.read_history(channel, None, 1, reverse=True)
            else:
                read = await self.engine.read_history(channel, since.offset, cap)
        except EngineError as exc:
            logger.warning("reading the position of %s failed: %s", channel, exc)
            if conn.pending is not None:
                conn.pending.pop(channel, None)
            await self._leave(conn, channel)
            raise unavailable(request_id) from None
        position = read.position
        # Recovery is a read of the history: where that is not readable, a client could
        # claim offset 0 and read it all, so it recovers nothing.
        readable = self.rules.options(channel).history_read
        recovered = None if since is None else readable and can_recover(since, read, cap)
        if recovered and since is not None:
            for m in read.messages[: position.offset - since.offset]:
                data = protocol.decode_payload(m.data)
                conn.send(protocol.message(channel, data, m.offset, position.epoch))
        wire = protocol.Position(position.offset, position.epoch)
        conn.send(protocol.subscribed(channel, request_id, wire, recovered))
        self._release_held(conn, channel, position.offset)
        if channel not in self._positions:
            self._positions[channel] = position

    async def unsubscribe(self, conn: Connection, channel: str, request_id: int | None) -> None:
        if channel not in conn.channels:
            raise ProtocolError(ErrorCode.NOT_SUBSCRIBED, "not subscribed", request_id)
        await self._leave(conn, channel)
        conn.send(protocol.unsubscribed(channel, request_id))

    async def _leave(self, conn: Connection, channel: str) -> None:
        last = self.hub.remove(conn, channel)
        await self.presence.leave(channel, conn.id)
        if not last:
            return
        async with self._channel_lock(channel):
            if not self.hub.has_subscribers(channel):
                self._positions.pop(channel, None)
                await self.engine.unsubscribe(channel)

    # -- identity and presence -----------------------------------------------------------

    async def handle_query_token(self, conn: Connection, token: str) -> None:
        """A ``?token=`` on the handshake: a connect the client need not send."""
        await self.execute(conn, protocol.Connect(token=token))

    async def identify(self, conn: Connection, command: protocol.Connect) -> None:
        """Who the connection is: from its token when tokens are enforced, else what
        the ``connect`` frame states (development mode, see docs/security.md)."""
        if conn.identified or conn.channels:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "connect must be the first frame, sent once", command.id
            )
        if self.verifier is None:
            if command.token is not None:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    "this server has no JWT key configured, so it cannot verify tokens",
                    command.id,
                )
            conn.user, conn.info = command.user, self._info(command)
        elif command.token is not None:
            await self.authenticate(conn, command.token, command.id)
        elif self.settings.allow_anonymous and command.user is None:
            conn.user, conn.info = None, self._info(command)
        else:
            raise auth.AuthError("a token is required", CloseCode.UNAUTHORIZED, command.id)
        conn.identified = True
        conn.send(
            protocol.connected(
                conn.id, conn.user, command.id, self.settings.ping_interval, conn.expires_at
            )
        )

    def _info(self, command: protocol.Connect) -> bytes | None:
        if command.info is None:
            return None
        info = orjson.dumps(command.info)
        if len(info) > self.settings.max_presence_info:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"info is over {self.settings.max_presence_info} bytes of JSON",
                command.id,
            )
        return info

    async def authenticate(self, conn: Connection, token: str, request_id: int | None) -> None:
        """Verify a connection token and take the user's connection slot."""
        assert self.verifier is not None
        try:
            identity = self.verifier.connection(token)
        except auth.AuthError as exc:
            raise auth.AuthError(exc.message, exc.close_code, request_id) from None
        limit = self.settings.max_connections_per_user
        try:
            admitted = await self.engine.acquire_user_connection(
                identity.user,
                conn.id,
                self.presence.now_ms(),
                int(self.settings.presence_ttl * 1000),
                limit,
            )
        except EngineError:
            raise unavailable(request_id) from None
        if not admitted:
            raise auth.AuthError(
                f"this user already holds {limit} connections",
                CloseCode.TOO_MANY_CONNECTIONS,
                request_id,
            )
        conn.user, conn.info, conn.granted = identity.user, identity.info, identity.channels
        self.presence.track_user(identity.user, conn.id)
        self._arm_expiry(conn, identity.expires_at)

    def refresh(self, conn: Connection, command: protocol.Refresh) -> None:
        if self.verifier is None:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "this server does not use tokens", command.id
            )
        try:
            identity = self.verifier.connection(command.token)
        except auth.AuthError as exc:
            raise auth.AuthError(exc.message, exc.close_code, command.id) from None
        if identity.user != conn.user:
            raise auth.AuthError(
                "the new token is for another user", CloseCode.UNAUTHORIZED, command.id
            )
        conn.granted = identity.channels
        self._arm_expiry(conn, identity.expires_at)
        conn.send(protocol.refreshed(identity.expires_at, command.id))

    def may_subscribe(self, conn: Connection, channel: str, token_ok: bool = False) -> bool:
        if not self.enforcing:
            return True
        options = self.rules.options(channel)
        return auth.may_subscribe(conn.user, conn.granted, channel, options, token_ok)

    def check_subscribe(
        self, conn: Connection, channel: str, token: str | None, request_id: int | None
    ) -> None:
        token_ok = False
        if token is not None:
            if self.verifier is None:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST, "this server does not use tokens", request_id
                )
            try:
                self.verifier.subscription(token, conn.user, channel)
            except auth.AuthError as exc:
                # A bad subscription token refuses this subscription, not the connection.
                raise ProtocolError(ErrorCode.FORBIDDEN, exc.message, request_id) from None
            token_ok = True
        if not self.may_subscribe(conn, channel, token_ok):
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"not allowed to subscribe to {channel!r}", request_id
            )

    def require_presence(self, channel: str, request_id: int | None = None) -> None:
        if not self.rules.options(channel).presence:
            raise ProtocolError(
                ErrorCode.NOT_FOUND, f"presence is not enabled for {channel!r}", request_id
            )

    async def presence_page(
        self, channel: str, limit: int, cursor: str | None, request_id: int | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of members and the cursor of the next page (None at the end)."""
        self.require_presence(channel, request_id)
        try:
            page = await self.engine.presence_page(channel, cursor, limit)
        except EngineError:
            raise unavailable(request_id) from None
        next_cursor = protocol.encode_cursor(page[-1].key) if len(page) == limit else None
        return [member_json(m) for m in page], next_cursor

    async def presence_query(self, conn: Connection, command: protocol.Presence) -> None:
        if command.channel not in conn.channels:
            raise ProtocolError(
                ErrorCode.NOT_SUBSCRIBED, "subscribe to a channel to see its presence", command.id
            )
        if not self.rules.options(command.channel).presence_read:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "presence of this channel is not readable", command.id
            )
        members, next_cursor = await self.presence_page(
            command.channel, command.limit, command.cursor, command.id
        )
        conn.send(protocol.presence_reply(command.channel, members, next_cursor, command.id))

    # -- publishing ------------------------------------------------------------------------

    async def publish(
        self, channels: Sequence[str], data: Any, idempotency_key: str | None = None
    ) -> list[StreamPosition | None]:
        """Publish ``data`` to ``channels`` through the engine, reaching every node.

        Returns each channel's position: the offset and epoch on durable channels, None
        on the others. An idempotency key applies per durable channel.
        """
        payload = protocol.encode_data(data)
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
        positions: dict[str, StreamPosition] = {}
        for channel in channels:
            if channel in durable:
                positions[channel] = await self.engine.publish_durable(
                    channel, payload, idempotency_key
                )
        return [positions.get(c) for c in channels]

    async def client_publish(self, conn: Connection, command: protocol.Publish) -> None:
        options = self.rules.options(command.channel)
        if not options.client_publish or not self.may_subscribe(conn, command.channel):
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"clients may not publish to {command.channel!r}",
                command.id,
            )
        try:
            (position,) = await self.publish(
                [command.channel], command.data, command.idempotency_key
            )
        except ProtocolError as exc:
            raise ProtocolError(exc.code, exc.message, command.id) from None
        except EngineError:
            raise unavailable(command.id) from None
        wire = protocol.Position(position.offset, position.epoch) if position else None
        conn.send(protocol.published(command.channel, command.id, wire))

    # -- history ---------------------------------------------------------------------------

    async def history(
        self,
        channel: str,
        since: int | None,
        limit: int,
        reverse: bool,
        request_id: int | None = None,
    ) -> tuple[protocol.Position, list[dict[str, Any]]]:
        if not self.rules.options(channel).durable:
            raise ProtocolError(
                ErrorCode.NOT_FOUND, f"{channel!r} is not a durable channel", request_id
            )
        try:
            read = await self.engine.read_history(channel, since, limit, reverse)
        except EngineError:
            raise unavailable(request_id) from None
        messages = [
            {"offset": m.offset, "data": protocol.decode_payload(m.data)} for m in read.messages
        ]
        return protocol.Position(read.position.offset, read.position.epoch), messages

    async def history_query(self, conn: Connection, command: protocol.History) -> None:
        if command.channel not in conn.channels:
            raise ProtocolError(
                ErrorCode.NOT_SUBSCRIBED, "subscribe to a channel to read its history", command.id
            )
        if not self.rules.options(command.channel).history_read:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "history of this channel is not readable", command.id
            )
        position, messages = await self.history(
            command.channel, command.since, command.limit, command.reverse, command.id
        )
        conn.send(protocol.history_reply(command.channel, position, messages, command.id))

    async def clear_history(self, channel: str) -> protocol.Position:
        if not self.rules.options(channel).durable:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{channel!r} is not a durable channel")
        try:
            position = await self.engine.clear_history(channel)
        except EngineError:
            raise unavailable() from None
        return protocol.Position(position.offset, position.epoch)

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
        }
