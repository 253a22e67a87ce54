"""pushhub's uvicorn layer: a closed connection is gone, and no request pins memory.

uvicorn's protocols leave a socket behind in several ways when a peer stops reading:
its WebSocket ``send`` waits for the transport to become writable for ever,
``transport.close()`` (from the close timer, the keep-alive timeout, shutdown or the end
of the app) waits for the write buffer to drain, which never happens, and nothing ever
calls ``abort()``. The socket, its descriptor and megabytes of buffers are then held for
good, and the app never sees ``websocket.disconnect``. On the HTTP side, uvicorn has no
deadline for receiving request headers and no bound on their size (httptools buffers
each header whole), so an idle connection, a slowloris or a 20 MB header pins memory.

This module fixes that with subclasses of uvicorn's own protocols, bound to the settings
by ``protocols()``:

- ``TransportGuard`` wraps the asyncio transport: a ``close()`` with data still buffered
  becomes "flush for at most ``close_timeout``, then abort", and a write side paused for
  ``write_timeout`` (no progress: the peer is not reading) aborts.
- ``PushhubWebSocketProtocol`` uses the guard, aborts at once on a ping timeout (the peer
  is presumed dead, there is nothing to flush to), and gives the app an ``abort``
  callable in ``scope["extensions"]["pushhub.transport"]``.
- ``PushhubHttpProtocol`` uses the guard, closes a connection that has not sent complete
  request headers within ``header_timeout``, answers 431 past ``max_header_bytes`` of
  request line and headers, and applies ``max_connections`` to WebSocket upgrades too
  (uvicorn's ``limit_concurrency`` skips them).

Why subclasses of uvicorn's protocols rather than a proxy in front: pushhub ships as
``pushhub serve`` and chooses the uvicorn it runs on, so the exact internals are known;
there is no second hop to run, configure and account for, and only the server can
abort a socket the app has given up on. The price is a dependency on
uvicorn's internals (method names, attributes); ``uvicorn_incompatibility()`` stops
start-up with one line when they are missing, and tests/unit/test_server.py and the
integration tests exercise these very internals, so an upgrade that changes them fails
CI loudly rather than quietly bringing the ghosts back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from pushhub.config import Settings
from pushhub.ratelog import RateLimitedLog

logger = logging.getLogger("pushhub.server")

#: The ASGI scope extension through which the app can abort its socket.
TRANSPORT_EXTENSION = "pushhub.transport"

#: Descriptors kept for everything that is not a client connection: Redis, log files,
#: the listening socket, the event loop's own, static files being served.
FD_RESERVE = 256

#: ``SO_LINGER`` on, timeout 0: closing the socket sends RST and frees its kernel buffers
#: at once, instead of leaving an orphan that keeps retrying a peer that does not read.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


_DEFAULTS = Settings()


class Handshakes:
    """WebSocket handshakes in progress on this server: from the upgrade request until
    the app accepts or refuses the socket, or the socket is lost. Past ``limit`` an
    upgrade is answered 503 with ``Retry-After`` at once, before any app work: during a
    reconnect storm the event loop's backlog of handshakes stays bounded, and the
    clients already connected keep getting their messages. The phase counted is one the
    server alone decides the length of (nothing waits on the client in it), so a client
    cannot hold a slot."""

    __slots__ = ("_refusals", "in_progress", "limit", "refused")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_progress = 0
        self.refused = 0
        self._refusals = RateLimitedLog(logger, interval=10.0)

    def admit(self) -> bool:
        if self.in_progress >= self.limit:
            self.refused += 1
            self._refusals.warning(
                "handshakes",
                "refused WebSocket upgrades with 503: %d handshakes in progress (max_handshakes)",
                self.in_progress,
            )
            return False
        self.in_progress += 1
        return True

    def done(self) -> None:
        self.in_progress -= 1


@dataclass(frozen=True, slots=True)
class Limits:
    """The settings the protocols need (docs/configuration.md has them all)."""

    close_timeout: float = _DEFAULTS.close_timeout
    write_timeout: float = _DEFAULTS.write_timeout
    header_timeout: float = _DEFAULTS.header_timeout
    max_header_bytes: int = _DEFAULTS.max_header_bytes
    keepalive_timeout: float = _DEFAULTS.keepalive_timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            close_timeout=settings.close_timeout,
            write_timeout=settings.write_timeout,
            header_timeout=settings.header_timeout,
            max_header_bytes=settings.max_header_bytes,
            keepalive_timeout=settings.keepalive_timeout,
        )


class TransportGuard(asyncio.Transport):
    """An asyncio transport whose closes and stalls end in bounded time.

    It forwards everything to the real transport, except:

    - ``close()`` with data still buffered arms a ``close_timeout`` deadline, after which
      the transport is aborted: a peer that stopped reading cannot hold the socket.
    - ``writing_paused()`` / ``writing_resumed()`` (the protocol forwards the transport's
      ``pause_writing`` / ``resume_writing``) run a ``write_timeout`` timer: writes paused
      that long without the buffer draining to the low-water mark mean the peer made no
      progress, and the transport is aborted.
    - ``abort()`` resets the connection (RST), so the kernel's buffers go too.

    The protocol calls ``lost()`` from its ``connection_lost``; that cancels the timers.
    One guard serves a connection for its whole life: the HTTP protocol makes it, and
    the WebSocket protocol it upgrades to takes the same one over (``around``).
    """

    __slots__ = (
        "_aborted",
        "_deadline",
        "_limits",
        "_loop",
        "_lost",
        "_stall",
        "_transport",
        "handshake",
        "write_paused",
    )

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, limits: Limits
    ) -> None:
        # No super().__init__(): it would make an ``_extra`` dict per socket, and
        # get_extra_info() asks the real transport anyway.
        self._transport = transport
        self._loop = loop
        self._limits = limits
        self._deadline: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None
        self._lost = False
        self._aborted = False
        #: Whether the transport asked its protocol to stop writing; a protocol taking
        #: the connection over (the WebSocket upgrade) starts from it.
        self.write_paused = False
        #: The handshake count this connection holds a place in, until it is done.
        self.handshake: Handshakes | None = None

    @classmethod
    def around(
        cls, transport: asyncio.BaseTransport, loop: asyncio.AbstractEventLoop, limits: Limits
    ) -> TransportGuard:
        """The guard of ``transport``: the same one if it is already guarded."""
        if isinstance(transport, TransportGuard):
            return transport
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        return cls(cast(asyncio.Transport, transport), loop, limits)

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    # What the guard adds.

    def close(self) -> None:
        self._transport.close()
        if self._lost or self._aborted or self._deadline is not None:
            return
        if self._transport.get_write_buffer_size():
            self._deadline = self._loop.call_later(self._limits.close_timeout, self._close_expired)

    def linger(self, seconds: float) -> None:
        """Abort in ``seconds`` unless the connection is gone by then: for a refusal that
        keeps reading (and dropping) what the client sends until it has read the answer."""
        if not (self._lost or self._aborted or self._deadline is not None):
            self._deadline = self._loop.call_later(seconds, self._linger_expired)

    def abort(self) -> None:
        self.abort_for("aborted by the application")

    def abort_for(self, reason: str, level: int = logging.INFO) -> None:
        """Reset the connection now, whatever is unsent, and log ``reason`` once."""
        if self._lost or self._aborted:
            return
        self._aborted = True
        self._cancel_timers()
        if logger.isEnabledFor(level):
            logger.log(level, "aborted the connection from %s: %s", self._peer(), reason)
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            # Already closed, or not a TCP socket: a plain abort will do.
            with contextlib.suppress(OSError, AttributeError, TypeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        self._transport.abort()

    def writing_paused(self) -> None:
        self.write_paused = True
        if self._stall is None and not (self._lost or self._aborted):
            self._stall = self._loop.call_later(self._limits.write_timeout, self._stalled)

    def writing_resumed(self) -> None:
        self.write_paused = False
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def lost(self) -> None:
        """The connection is gone (the protocol's ``connection_lost``)."""
        self._lost = True
        self._cancel_timers()
        self.handshake_done()

    def handshake_done(self) -> None:
        """The WebSocket handshake is over (accepted, refused or lost): once."""
        handshake, self.handshake = self.handshake, None
        if handshake is not None:
            handshake.done()

    def _close_expired(self) -> None:
        self._deadline = None
        self.abort_for(
            f"unsent data {self._limits.close_timeout:g}s after the close (the peer is not reading)"
        )

    def _linger_expired(self) -> None:
        self._deadline = None
        self.abort_for(f"still open {self._limits.close_timeout:g}s after a refusal")

    def _stalled(self) -> None:
        self._stall = None
        self.abort_for(
            f"no write progress for {self._limits.write_timeout:g}s (the peer is not reading)"
        )

    def _cancel_timers(self) -> None:
        for timer in (self._deadline, self._stall):
            if timer is not None:
                timer.cancel()
        self._deadline = self._stall = None

    def _peer(self) -> str:
        peer = self._transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
            return f"{host}:{peer[1]}"
        return str(peer or "unknown peer")

    # Everything else is the real transport's.

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()


class _Guarded(asyncio.Protocol):
    """What both protocols add to uvicorn's: the limits, the transport guard, and the
    write side's pauses forwarded to the guard (its ``write_timeout`` timer)."""

    limits: ClassVar[Limits] = Limits()
    guard: TransportGuard

    def pause_writing(self) -> None:
        super().pause_writing()
        self.guard.writing_paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.guard.writing_resumed()


class Inbox:
    """What uvicorn's WebSocket protocol uses of ``asyncio.Queue`` (``put_nowait``,
    ``get``, ``empty``, ``qsize``) for its one reader, the app's ``receive``.

    An ``asyncio.Queue`` holds three deques from birth, about 1.7 KiB for a socket that
    mostly waits; this holds a list only while something is queued, and one future
    only while the app waits."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = [item]
        else:
            self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = self._items
        item = items.pop(0)  # a socket's queue holds a handful at most (reads pause)
        if not items:
            self._items = None
        return item

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0


class Flag:
    """What uvicorn's WebSocket protocol uses of ``asyncio.Event`` for ``writable``
    (``set``, ``clear``, ``is_set``, ``wait``), without the deque an Event makes at
    birth: waiters exist only while the socket's write side is paused."""

    __slots__ = ("_set", "_waiters")

    def __init__(self, value: bool = True) -> None:
        self._set = value
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        while not self._set:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
        return True


class PushhubWebSocketProtocol(_Guarded, WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, with bounded closes and stalls, and a
    smaller footprint per idle socket: a slim inbox and writable flag, and the
    handshake's request, response and headers let go of once the socket is accepted
    (pushhub's transport reads what it needs from the headers before accepting)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # How long a close frame waits for the peer's reply (uvicorn: 10 s, fixed).
        self.close_timeout = self.limits.close_timeout
        self.queue = cast(Any, Inbox())
        self.writable = cast(Any, Flag())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.guard = TransportGuard.around(transport, self.loop, self.limits)
        super().connection_made(self.guard)
        if self.guard.write_paused:
            self.writable.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.lost()
        # uvicorn's own: queues websocket.disconnect for the app and wakes a send()
        # waiting for the socket, which then raises ClientDisconnected.
        super().connection_lost(exc)

    def keepalive_timeout(self) -> None:
        # uvicorn writes a 1011 close frame and closes, which waits for a buffer that a
        # dead peer never drains. Nothing answered the ping: there is no one to flush to.
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.disconnected:
            return
        # DEBUG: vanished clients (mobile networks, sleeping laptops) are routine.
        self.guard.abort_for(f"no pong within {self.ping_timeout:g}s", logging.DEBUG)

    async def send(self, message: Any) -> None:
        if self.handshake_complete:
            # A frame on an open socket (every message to every subscriber): nothing
            # of the handshake is left to do.
            await super().send(message)
            return
        try:
            await super().send(message)
        finally:
            if self.handshake_complete:
                self.guard.handshake_done()
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # Accepted: the handshake's request and response (with their headers) and
            # the scope's header list are not read again: about 6 KiB per socket.
            # websockets' parser keeps the request object for the connection's life
            # (a local of its generator), so its headers are emptied, not just dropped.
            for message_ in (self.request, self.response):
                if message_ is not None:
                    message_.headers.clear()
            self.request = cast(Any, None)
            self.response = cast(Any, None)
            self.scope["headers"] = []

    async def run_asgi(self) -> None:
        # The guard itself (its abort() is the app's way out), not a dict holding a bound
        # method: at 10,000 idle sockets every object kept per socket counts.
        extensions = self.scope.setdefault("extensions", {})
        extensions[TRANSPORT_EXTENSION] = cast(Any, self.guard)  # ours: an object, not a dict
        await super().run_asgi()


class PushhubHttpProtocol(_Guarded, HttpToolsProtocol):
    """uvicorn's httptools protocol, with a header deadline and size cap, bounded
    closes and stalls, and ``max_connections`` and ``max_handshakes`` applied to
    WebSocket upgrades."""

    #: Shared by every connection of a server (``protocols`` binds one per server).
    handshakes: ClassVar[Handshakes] = Handshakes(_DEFAULTS.max_handshakes)

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's Config takes whole seconds; the setting may be a fraction.
        self.timeout_keep_alive = self.limits.keepalive_timeout  # type: ignore[assignment]
        self._header_timer: asyncio.TimerHandle | None = None
        #: True from the connection's start, and after each request, until a request's
        #: headers are complete: the bytes received meanwhile count against the cap.
        self._reading_headers = True
        self._header_bytes = 0
        self._headers_seen = 0
        self._refused = False
        self._upgraded = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.guard = TransportGuard.around(transport, self.loop, self.limits)
        super().connection_made(self.guard)
        # A connection that never sends a byte is closed after header_timeout too.
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        self.guard.lost()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered and closing: read and drop, so the answer is not reset away
        if self._reading_headers and self._header_timer is None:
            # The first byte of the next request on a kept-alive connection (even a
            # stray CRLF, which starts no message) starts its deadline.
            self._arm_header_deadline()
        # Bytes are counted before httptools sees them: it buffers a header whole, so a
        # cap checked in its callbacks would come after the memory is spent.
        while self._reading_headers:
            room = self.limits.max_header_bytes - self._header_bytes
            if len(data) <= room:
                self._header_bytes += len(data)
                super().data_received(data)
                return
            head, data = data[:room], data[room:]
            self._header_bytes += len(head)
            seen = self._headers_seen
            if head:
                super().data_received(head)
            if self._refused or self._upgraded or self.transport.is_closing():
                return  # after an upgrade uvicorn drops the rest too
            if self._headers_seen == seen:
                self._refuse(431, b"Request header fields too large")
                return
            # The headers ended within the cap; the rest is body (or the next request).
        # Body bytes: uvicorn bounds them itself (it pauses reading past 64 KiB). A
        # pipelined request later in this chunk is counted from the next read on.
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_headers = True
        # Armed already for the first request (at connect: a client cannot extend its
        # deadline by starting late) and in data_received for the next ones; this
        # covers a request pipelined behind another in one read.
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._cancel_header_deadline()
        self._reading_headers = False
        self._header_bytes = 0
        self._headers_seen += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_headers = True
        self._header_bytes = 0

    def handle_websocket_upgrade(self) -> None:
        # uvicorn applies limit_concurrency to HTTP requests only; a WebSocket would
        # otherwise get past max_connections. This connection is counted in the set, as
        # in uvicorn's own check.
        limit = self.limit_concurrency
        if limit is not None and len(self.connections) >= limit:
            self.logger.warning("Exceeded concurrency limit.")
            self._refuse(503, b"Service Unavailable", retry=True)
            return
        if not self.handshakes.admit():
            self._refuse(503, b"Too many WebSocket handshakes in progress", retry=True)
            return
        self.guard.handshake = self.handshakes
        self._upgraded = True
        super().handle_websocket_upgrade()

    def _arm_header_deadline(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout, self._headers_timed_out
            )

    def _cancel_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        # DEBUG: idle preconnects and port scanners are routine; a slowloris is many.
        self.guard.abort_for(
            f"no complete request headers within {self.limits.header_timeout:g}s",
            logging.DEBUG,
        )

    def _refuse(self, status: int, body: bytes, retry: bool = False) -> None:
        """Answer ``status`` and close, reading and dropping what the client still sends
        for up to ``close_timeout``: closing a socket with unread input resets it, and
        the client would lose the answer."""
        self._refused = True
        self._cancel_header_deadline()
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is being written on this connection (pipelining): there is no
            # room for another one.
            self.guard.abort_for(f"{status} while a response was in progress", logging.DEBUG)
            return
        logger.debug("answered %d and closing the connection from %s", status, self.client)
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"retry-after: 1\r\n" if retry else b"",
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(content))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.guard.linger(self.limits.close_timeout)


def protocols(
    settings: Settings,
) -> tuple[type[PushhubHttpProtocol], type[PushhubWebSocketProtocol]]:
    """The protocol classes for ``uvicorn.Config(http=..., ws=...)``, bound to settings.

    uvicorn makes protocols from a class it calls with its own arguments, so the limits
    travel as a class attribute of subclasses made here.
    """
    bound = Limits.from_settings(settings)

    class HttpProtocol(PushhubHttpProtocol):
        limits = bound
        handshakes = Handshakes(settings.max_handshakes)

    class WebSocketProtocol(PushhubWebSocketProtocol):
        limits = bound

    return HttpProtocol, WebSocketProtocol


#: What pushhub overrides or calls in uvicorn: its internals, not its API.
_RELIED_ON: dict[type, tuple[str, ...]] = {
    WebSocketsSansIOProtocol: (
        "connection_made",
        "connection_lost",
        "pause_writing",
        "resume_writing",
        "keepalive_timeout",
        "run_asgi",
        "send",
    ),
    HttpToolsProtocol: (
        "connection_made",
        "connection_lost",
        "pause_writing",
        "resume_writing",
        "data_received",
        "on_message_begin",
        "on_headers_complete",
        "on_message_complete",
        "handle_websocket_upgrade",
    ),
}


def uvicorn_incompatibility() -> str | None:
    """None if this uvicorn has the internals pushhub's protocols rely on; else one
    line saying what is missing."""
    import uvicorn

    missing = [
        f"{cls.__name__}.{name}"
        for cls, names in _RELIED_ON.items()
        for name in names
        if not callable(getattr(cls, name, None))
    ]
    if not missing:
        return None
    return (
        f"uvicorn {uvicorn.__version__} lacks {', '.join(missing)}, which pushhub's "
        "server layer relies on; install the uvicorn version pushhub pins"
    )


def connection_bound(max_connections: int) -> int:
    """Raise the soft open-file limit to the hard one and return how many connections
    the node may hold: ``max_connections``, or fewer if descriptors would run out first
    (an accept failing with EMFILE stalls every new client, not just the extra ones)."""
    try:
        import resource
    except ImportError:  # not POSIX: nothing to raise or check
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            # macOS refuses an infinite soft limit: ask for what is needed instead.
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    bound = max(1, soft - FD_RESERVE)
    logger.warning(
        "the open-file limit is %d, below max_connections (%d) + %d for everything else: "
        "serving at most %d connections; raise the limit (ulimit -n, LimitNOFILE=)",
        soft,
        max_connections,
        FD_RESERVE,
        bound,
    )
    return bound
