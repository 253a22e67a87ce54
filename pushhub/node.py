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

from pushhub import protocol
from pushhub.channels import ChannelRules
from pushhub.config import Settings
from pushhub.connection import Connection, ConnectionState, Sender
from pushhub.engine.base import Engine, PresenceEntry, PresenceMember
from pushhub.errors import EngineError, EngineUnavailable, ErrorCode, ProtocolError
from pushhub.hub import Hub
from pushhub.presence import PresenceManager

logger = logging.getLogger("pushhub.node")


def generate_node_id() -> str:
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:24] or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


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
        self.started_at = time.time()
        self.messages_received = 0
        self.messages_delivered = 0
        self._locks: dict[str, _ChannelLock] = {}
        self._ids = itertools.count(1)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.engine.start(self._on_payload)
        await self.presence.start()
        logger.info("node %s started with the %s engine", self.id, self.engine.name)

    async def close(self) -> None:
        await self.presence.close()
        await self.engine.close()
        logger.info("node %s stopped", self.id)

    # -- engine -> clients ----------------------------------------------------------------

    def _on_payload(self, channel: str, payload: bytes) -> None:
        self.messages_received += 1
        if not self.hub.has_subscribers(channel):
            return
        if payload.startswith(protocol.ENVELOPE):
            if not self.rules.options(channel).join_leave:
                return
            event = protocol.event_from_envelope(channel, payload)
            if event is None:
                logger.debug("dropped an unknown envelope on %s", channel)
                return
            self.messages_delivered += self.hub.broadcast(channel, event)
            return
        frame = protocol.message(channel, protocol.decode_payload(payload))
        self.messages_delivered += self.hub.broadcast(channel, frame)

    # -- connections ---------------------------------------------------------------------

    def open(self, sender: Sender) -> Connection:
        """A new connection for an accepted socket, its writer started."""
        conn = Connection(
            f"{self.id}.{next(self._ids)}", sender, self.settings.outbound_queue_bytes
        )
        self.hub.register(conn)
        conn.start()
        return conn

    async def disconnect(self, conn: Connection) -> None:
        """Release everything ``conn`` holds. Call once, when its socket is gone."""
        conn.closed()
        self.hub.unregister(conn)
        for channel in tuple(conn.channels):
            await self._leave(conn, channel)
        await conn.wait_closed()

    async def handle(self, conn: Connection, text: str) -> None:
        """Handle one client text frame. Errors are answered, never raised."""
        try:
            command = protocol.parse(text)
            if isinstance(command, protocol.Subscribe):
                await self.subscribe(conn, command.channel, command.id)
            elif isinstance(command, protocol.Unsubscribe):
                await self.unsubscribe(conn, command.channel, command.id)
            elif isinstance(command, protocol.Ping):
                conn.send(protocol.pong(command.id))
            elif isinstance(command, protocol.Connect):
                self.identify(conn, command)
            else:
                await self.presence_query(conn, command)
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

    async def subscribe(self, conn: Connection, channel: str, request_id: int | None) -> None:
        if channel in conn.channels:
            raise ProtocolError(ErrorCode.ALREADY_SUBSCRIBED, "already subscribed", request_id)
        if len(conn.channels) >= self.settings.max_subscriptions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {self.settings.max_subscriptions} subscriptions per connection",
                request_id,
            )
        async with self._channel_lock(channel):
            if not self.hub.has_subscribers(channel):
                try:
                    await self.engine.subscribe(channel)
                except EngineUnavailable as exc:
                    logger.warning("subscribe to %s failed: %s", channel, exc)
                    raise ProtocolError(
                        ErrorCode.UNAVAILABLE, "the engine is unavailable, retry later", request_id
                    ) from None
            if conn.state is not ConnectionState.OPEN:
                # The client went away while the engine answered: undo, answer nobody.
                if not self.hub.has_subscribers(channel):
                    await self.engine.unsubscribe(channel)
                return
            # Register and confirm in one step, with no await between, so that no
            # message of this channel can reach the client before "subscribed".
            self.hub.add(conn, channel)
            conn.send(protocol.subscribed(channel, request_id))
        if self.rules.options(channel).presence:
            entry = PresenceEntry(conn.id, protocol.member_key(conn.user, conn.id), conn.info)
            await self.presence.join(channel, entry)

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
                await self.engine.unsubscribe(channel)

    # -- identity and presence -----------------------------------------------------------

    def identify(self, conn: Connection, command: protocol.Connect) -> None:
        """Development-mode identity from a ``connect`` frame (see docs/presence.md)."""
        if conn.identified or conn.channels:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "connect must be the first frame, sent once", command.id
            )
        info = None
        if command.info is not None:
            info = orjson.dumps(command.info)
            if len(info) > self.settings.max_presence_info:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    f"info is over {self.settings.max_presence_info} bytes of JSON",
                    command.id,
                )
        conn.user, conn.info, conn.identified = command.user, info, True
        conn.send(protocol.connected(conn.id, conn.user, command.id))

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
            raise ProtocolError(
                ErrorCode.UNAVAILABLE, "the engine is unavailable, retry later", request_id
            ) from None
        next_cursor = protocol.encode_cursor(page[-1].key) if len(page) == limit else None
        return [member_json(m) for m in page], next_cursor

    async def presence_query(self, conn: Connection, command: protocol.Presence) -> None:
        if command.channel not in conn.channels:
            raise ProtocolError(
                ErrorCode.NOT_SUBSCRIBED, "subscribe to a channel to see its presence", command.id
            )
        members, next_cursor = await self.presence_page(
            command.channel, command.limit, command.cursor, command.id
        )
        conn.send(protocol.presence_reply(command.channel, members, next_cursor, command.id))

    # -- publishing ------------------------------------------------------------------------

    async def publish(self, channels: Sequence[str], data: Any) -> None:
        """Publish ``data`` to ``channels`` through the engine, reaching every node."""
        payload = protocol.encode_data(data)
        if len(channels) == 1:
            await self.engine.publish(channels[0], payload)
        else:
            await self.engine.publish_many((channel, payload) for channel in channels)

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
