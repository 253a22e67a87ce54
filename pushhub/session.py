"""One client's session: who it is, what it may do, and the commands it sends.

A session sits between a socket's frames and the node. It holds the client's identity
(user, presence info, the channels its token grants, when the token expires), its
timers (the authentication deadline, then the token expiry) and its query budget, and
it turns each command into calls on the node's channel side. The node keeps what is
shared by every session on this node: channels, the engine, catch-up and recovery.

Errors and request ids meet in one place: a command's handler raises ``ProtocolError``
(or ``AuthError``) without an id, and ``execute`` answers with the command's id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING

import orjson

from pushhub import auth, protocol
from pushhub.connection import Connection, Sender
from pushhub.engine.base import PresenceEntry
from pushhub.errors import CloseCode, EngineError, ErrorCode, ProtocolError, unavailable
from pushhub.limits import TokenBucket

if TYPE_CHECKING:
    from pushhub.node import Node


class SessionState(Enum):
    #: Accepted; with tokens enforced, only ``connect`` is answered.
    UNIDENTIFIED = "unidentified"
    #: ``connect`` (or ``?token=``) succeeded; every command is answered.
    IDENTIFIED = "identified"
    #: The close was decided; nothing more is done for it.
    CLOSED = "closed"


_NOT_FIRST = "connect must be the first frame, sent once"
_NO_TOKENS = "this server does not use tokens"


class Session:
    """One client connection's identity, permissions, timers and command dispatch."""

    __slots__ = (
        "conn",
        "expires_at",
        "granted",
        "info",
        "ip",
        "node",
        "on_release",
        "query_bucket",
        "state",
        "timer",
        "user",
    )

    def __init__(
        self,
        node: Node,
        conn_id: str,
        sender: Sender,
        ip: str | None = None,
        on_release: Callable[[str], None] | None = None,
    ) -> None:
        self.node = node
        settings = node.settings
        self.conn = Connection(
            conn_id,
            sender,
            settings.outbound_queue_bytes,
            node.outbox,
            self._closing,
            settings.close_timeout,
        )
        self.state = SessionState.UNIDENTIFIED
        #: Who this is: a user id, or None for an anonymous connection.
        self.user: str | None = None
        #: Presence info shown to other members, as compact JSON.
        self.info: bytes | None = None
        #: Channel patterns the connection token grants, and when the token expires.
        self.granted: tuple[str, ...] = ()
        self.expires_at: int | None = None
        #: The authentication deadline, then the token expiry, when tokens are enforced.
        self.timer: asyncio.TimerHandle | None = None
        #: Presence and history queries' budget, made on the first query.
        self.query_bucket: TokenBucket | None = None
        self.ip = ip
        #: The transport's per-IP slot, given back once when the close is decided.
        self.on_release = on_release
        if node.enforcing:
            self.timer = asyncio.get_running_loop().call_later(
                settings.auth_timeout, self._auth_deadline
            )

    def __repr__(self) -> str:
        return f"<Session {self.conn.id} {self.state.value} user={self.user!r}>"

    @property
    def id(self) -> str:
        return self.conn.id

    @property
    def identified(self) -> bool:
        return self.state is SessionState.IDENTIFIED

    # -- lifecycle -------------------------------------------------------------------

    def _closing(self, conn: Connection) -> None:
        """The connection's close was decided (by the server, or the socket is gone):
        the timers and the per-IP slot go now, then the node releases the channels."""
        self.state = SessionState.CLOSED
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        hook, self.on_release = self.on_release, None
        if hook is not None and self.ip is not None:
            hook(self.ip)
        self.node.closing(self)

    async def release_user(self) -> None:
        """Give back the user's connection slot (after the channels are released)."""
        if self.node.enforcing and self.user is not None:
            with contextlib.suppress(EngineError):
                await self.node.engine.release_user_connection(self.user, self.conn.id)
            self.node.presence.untrack_user(self.user, self.conn.id)

    def _auth_deadline(self) -> None:
        if self.state is SessionState.UNIDENTIFIED:
            self.conn.close(CloseCode.AUTH_TIMEOUT, "no connect frame in time")

    def _token_expired(self) -> None:
        self.conn.send(protocol.error(ProtocolError(ErrorCode.TOKEN_EXPIRED, "the token expired")))
        self.conn.close(CloseCode.TOKEN_EXPIRED, "token expired", flush=True)

    def _arm_expiry(self, expires_at: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
        node = self.node
        delay = max(0.0, expires_at + node.settings.jwt_leeway - node.clock())
        self.timer = asyncio.get_running_loop().call_later(delay, self._token_expired)
        self.expires_at = expires_at

    # -- dispatch --------------------------------------------------------------------

    async def handle(self, text: str) -> None:
        """Handle one client text frame. Errors are answered, never raised."""
        try:
            command = protocol.parse(text, self.node.settings.max_json_depth)
        except ProtocolError as exc:
            self.conn.send(protocol.error(exc))
            return
        await self.execute(command)

    async def handle_query_token(self, token: str) -> None:
        """A ``?token=`` on the handshake: a connect the client need not send."""
        await self.execute(protocol.Connect(token=token))

    async def execute(self, command: protocol.Command) -> None:
        """Carry out one parsed command. Errors are answered with the command's id,
        never raised; a refused token also closes the connection."""
        conn = self.conn
        try:
            if (
                self.node.enforcing
                and self.state is SessionState.UNIDENTIFIED
                and not isinstance(command, protocol.Connect)
            ):
                conn.send(
                    protocol.error(
                        ProtocolError(ErrorCode.UNAUTHORIZED, "send connect with a token first"),
                        command.id,
                    )
                )
                conn.close(CloseCode.UNAUTHORIZED, "not authenticated", flush=True)
                return
            await self._dispatch(command)
        except auth.AuthError as exc:
            conn.send(protocol.error(exc, command.id))
            conn.close(exc.close_code, exc.message[:100], flush=True)
        except ProtocolError as exc:
            conn.send(protocol.error(exc, command.id))

    async def _dispatch(self, command: protocol.Command) -> None:
        if isinstance(command, protocol.Subscribe):
            await self.subscribe(command)
        elif isinstance(command, protocol.Unsubscribe):
            await self.unsubscribe(command)
        elif isinstance(command, protocol.Ping):
            self.conn.send(protocol.pong(command.id))
        elif isinstance(command, protocol.Connect):
            await self.identify(command)
        elif isinstance(command, protocol.Refresh):
            self.refresh(command)
        elif isinstance(command, protocol.Presence):
            await self.presence(command)
        elif isinstance(command, protocol.Publish):
            await self.publish(command)
        else:
            await self.history(command)

    # -- identity --------------------------------------------------------------------

    async def identify(self, command: protocol.Connect) -> None:
        """Who the connection is: from its token when tokens are enforced, else what
        the ``connect`` frame states (development mode, see docs/security.md)."""
        if self.state is not SessionState.UNIDENTIFIED or self.conn.channels:
            raise ProtocolError(ErrorCode.BAD_REQUEST, _NOT_FIRST)
        node = self.node
        if node.verifier is None:
            if command.token is not None:
                raise ProtocolError(
                    ErrorCode.BAD_REQUEST,
                    "this server has no JWT key configured, so it cannot verify tokens",
                )
            # Anonymous connections cannot set info: it would be broadcast to every
            # member as if someone had vouched for it.
            self.user = command.user
            self.info = self._info(command) if command.user is not None else None
        elif command.token is not None:
            if not await self.authenticate(command.token):
                return
        elif node.settings.allow_anonymous and command.user is None:
            self.user, self.info = None, None
        else:
            raise auth.AuthError("a token is required", CloseCode.UNAUTHORIZED)
        self.state = SessionState.IDENTIFIED
        self.conn.send(
            protocol.connected(
                self.conn.id, self.user, command.id, node.settings.ping_interval, self.expires_at
            )
        )

    def _info(self, command: protocol.Connect) -> bytes | None:
        if command.info is None:
            return None
        info = orjson.dumps(command.info)
        limit = self.node.settings.max_presence_info
        if len(info) > limit:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"info is over {limit} bytes of JSON")
        return info

    async def authenticate(self, token: str) -> bool:
        """Verify a connection token and take the user's connection slot. False if
        the connection closed meanwhile (the slot is given back)."""
        node = self.node
        assert node.verifier is not None
        identity = node.verifier.connection(token)
        limit = node.settings.max_connections_per_user
        try:
            admitted = await node.engine.acquire_user_connection(
                identity.user,
                self.conn.id,
                node.presence.now_ms(),
                int(node.settings.presence_ttl * 1000),
                limit,
            )
        except EngineError:
            raise unavailable() from None
        if not admitted:
            raise auth.AuthError(
                f"this user already holds {limit} connections", CloseCode.TOO_MANY_CONNECTIONS
            )
        if self.state is SessionState.CLOSED:
            # Closed while the slot was being taken (the authentication deadline, say):
            # its release already ran, with no user to release, so give the slot back.
            with contextlib.suppress(EngineError):
                await node.engine.release_user_connection(identity.user, self.conn.id)
            return False
        self.user, self.info, self.granted = identity.user, identity.info, identity.channels
        node.presence.track_user(identity.user, self.conn.id)
        self._arm_expiry(identity.expires_at)
        return True

    def refresh(self, command: protocol.Refresh) -> None:
        verifier = self.node.verifier
        if verifier is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, _NO_TOKENS)
        identity = verifier.connection(command.token)
        if identity.user != self.user:
            raise auth.AuthError("the new token is for another user", CloseCode.UNAUTHORIZED)
        self.granted = identity.channels
        self._arm_expiry(identity.expires_at)
        self.conn.send(protocol.refreshed(identity.expires_at, command.id))

    # -- permissions -----------------------------------------------------------------

    def may_subscribe(self, channel: str, token_ok: bool = False) -> bool:
        node = self.node
        if not node.enforcing:
            return True
        options = node.rules.options(channel)
        return auth.may_subscribe(self.user, self.granted, channel, options, token_ok)

    def check_subscribe(self, channel: str, token: str | None) -> None:
        token_ok = False
        if token is not None:
            verifier = self.node.verifier
            if verifier is None:
                raise ProtocolError(ErrorCode.BAD_REQUEST, _NO_TOKENS)
            try:
                verifier.subscription(token, self.user, channel)
            except auth.AuthError as exc:
                # A bad subscription token refuses this subscription, not the connection.
                raise ProtocolError(ErrorCode.FORBIDDEN, exc.message) from None
            token_ok = True
        if not self.may_subscribe(channel, token_ok):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not allowed to subscribe to {channel!r}")

    def _take_query(self) -> None:
        """Presence and history queries cost a Redis read and a large reply each: a
        connection may make ``query_rate`` a second (``query_burst`` at once)."""
        settings = self.node.settings
        if self.query_bucket is None:
            self.query_bucket = TokenBucket(settings.query_rate, settings.query_burst)
        if not self.query_bucket.take():
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"over {settings.query_rate:g} presence and history queries a second",
            )

    # -- commands --------------------------------------------------------------------

    async def subscribe(self, command: protocol.Subscribe) -> None:
        conn, node = self.conn, self.node
        if command.channel in conn.channels:
            raise ProtocolError(ErrorCode.ALREADY_SUBSCRIBED, "already subscribed")
        limit = node.settings.max_subscriptions
        if len(conn.channels) >= limit:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS, f"at most {limit} subscriptions per connection"
            )
        self.check_subscribe(command.channel, command.token)
        member = PresenceEntry(conn.id, protocol.member_key(self.user, conn.id), self.info)
        await node.subscribe(conn, command, member)

    async def unsubscribe(self, command: protocol.Unsubscribe) -> None:
        if command.channel not in self.conn.channels:
            raise ProtocolError(ErrorCode.NOT_SUBSCRIBED, "not subscribed")
        await self.node.unsubscribe(self.conn, command.channel)
        self.conn.send(protocol.unsubscribed(command.channel, command.id))

    def _check_query(self, channel: str, readable: bool, what: str) -> None:
        """A presence or history query: within the budget, on a channel this client
        holds and whose ``what`` its subscribers may read."""
        self._take_query()
        if channel not in self.conn.channels:
            raise ProtocolError(
                ErrorCode.NOT_SUBSCRIBED, f"subscribe to a channel to read its {what}"
            )
        if not readable:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"{what} of this channel is not readable")

    async def presence(self, command: protocol.Presence) -> None:
        channel = command.channel
        self._check_query(channel, self.node.rules.options(channel).presence_read, "presence")
        members, next_cursor = await self.node.presence_page(channel, command.limit, command.cursor)
        self.conn.send(protocol.presence_reply(channel, members, next_cursor, command.id))

    async def publish(self, command: protocol.Publish) -> None:
        options = self.node.rules.options(command.channel)
        if not options.client_publish or not self.may_subscribe(command.channel):
            raise ProtocolError(
                ErrorCode.FORBIDDEN, f"clients may not publish to {command.channel!r}"
            )
        try:
            (position,) = await self.node.publish(
                [command.channel], command.data, command.idempotency_key
            )
        except EngineError:
            raise unavailable() from None
        self.conn.send(protocol.published(command.channel, command.id, position))

    async def history(self, command: protocol.History) -> None:
        channel = command.channel
        self._check_query(channel, self.node.rules.options(channel).history_read, "history")
        position, messages, next_since = await self.node.history(
            channel, command.since, command.limit, command.reverse
        )
        self.conn.send(protocol.history_reply(channel, position, messages, next_since, command.id))
