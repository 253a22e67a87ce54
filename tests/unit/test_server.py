"""pushhub's uvicorn layer, driven without sockets: a fake transport, and timers that fire
only when the test moves the clock."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
import os
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest
from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.client import ClientProtocol
from websockets.uri import parse_uri

from pushhub import server
from pushhub.config import Settings
from pushhub.server import (
    TRANSPORT_EXTENSION,
    Handshakes,
    Limits,
    PushhubHttpProtocol,
    PushhubWebSocketProtocol,
    TransportGuard,
)
from tests.support import ROOT

LIMITS = Limits(
    close_timeout=2.0,
    write_timeout=10.0,
    header_timeout=10.0,
    max_header_bytes=4096,
    keepalive_timeout=5.0,
)
PEER = ("203.0.113.7", 4242)


class _Timer:
    def __init__(self, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.callback, self.args, self.cancelled = callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """The running loop, except that ``call_later`` timers fire only in ``advance``.

    Timers are what this layer is about; moving a clock instead of sleeping makes every
    deadline exact and the tests instant."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.now = 0.0
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _Timer:
        timer = _Timer(callback, args)
        heapq.heappush(self._timers, (self.now + delay, next(self._order), timer))
        return timer

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while self._timers and self._timers[0][0] <= self.now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback(*timer.args)

    def pending(self) -> int:
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


class FakeSocket:
    def __init__(self) -> None:
        self.options: list[tuple[int, int, bytes]] = []

    def setsockopt(self, level: int, option: int, value: bytes) -> None:
        self.options.append((level, option, value))

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 8000)

    def getpeername(self) -> tuple[str, int]:
        return PEER


class FakeTransport(asyncio.Transport):
    """Records what a protocol does to its transport. ``buffered`` plays the write buffer
    a peer that stopped reading leaves behind; ``abort`` reports the connection lost,
    as asyncio's and uvloop's transports do."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.buffered = 0
        self.closed = False
        self.aborted = False
        self.eof_written = False
        self.reading = True
        self.protocol: asyncio.BaseProtocol | None = None
        self.sock = FakeSocket()
        self.changed = asyncio.Event()

    def _changed(self) -> None:
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = 2) -> None:
        """Wait for what the protocol's tasks do (the ASGI app runs on the real loop)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                # Woken by the transport, or after a moment for what the app does.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.01)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self._changed()

    def close(self) -> None:
        self.closed = True
        self._changed()

    def abort(self) -> None:
        self.closed = self.aborted = True
        self._changed()
        protocol = self.protocol
        if protocol is not None:
            asyncio.get_running_loop().call_soon(protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        extra = {"peername": PEER, "sockname": ("127.0.0.1", 8000), "socket": self.sock}
        return extra.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock(asyncio.get_running_loop())


def guard_of(transport: FakeTransport, clock: ManualClock) -> TransportGuard:
    return TransportGuard(transport, cast(asyncio.AbstractEventLoop, clock), LIMITS)


# -- the transport guard -----------------------------------------------------------------


async def test_a_close_with_nothing_buffered_is_a_plain_close(clock: ManualClock) -> None:
    transport = FakeTransport()
    guard = guard_of(transport, clock)

    guard.close()
    clock.advance(LIMITS.close_timeout * 10)

    assert transport.closed
    assert not transport.aborted
    assert clock.pending() == 0


async def test_a_close_with_data_buffered_aborts_after_close_timeout(clock: ManualClock) -> None:
    transport = FakeTransport()
    transport.buffered = 3_000_000
    guard = guard_of(transport, clock)

    guard.close()
    clock.advance(LIMITS.close_timeout - 0.01)
    assert transport.closed
    assert not transport.aborted
    clock.advance(0.01)

    assert transport.aborted
    # An abort resets the connection, so the kernel drops its buffers too.
    assert transport.sock.options == [
        (socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ]


async def test_a_close_that_flushes_in_time_is_not_aborted(clock: ManualClock) -> None:
    transport = FakeTransport()
    transport.buffered = 100
    guard = guard_of(transport, clock)

    guard.close()
    guard.lost()  # the buffer drained and the transport reported the connection lost
    clock.advance(LIMITS.close_timeout * 10)

    assert not transport.aborted


async def test_closing_twice_arms_one_deadline(clock: ManualClock) -> None:
    transport = FakeTransport()
    transport.buffered = 100
    guard = guard_of(transport, clock)

    guard.close()
    clock.advance(1)
    guard.close()  # a second close must not push the deadline back

    assert clock.pending() == 1
    clock.advance(LIMITS.close_timeout - 1)
    assert transport.aborted


async def test_writes_paused_for_write_timeout_abort(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    transport = FakeTransport()
    guard = guard_of(transport, clock)

    with caplog.at_level(logging.INFO, "pushhub.server"):
        guard.writing_paused()
        clock.advance(LIMITS.write_timeout - 0.01)
        assert not transport.aborted
        clock.advance(0.01)

    assert transport.aborted
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert "203.0.113.7:4242" in record.getMessage()
    assert "no write progress" in record.getMessage()


async def test_writes_resumed_in_time_cancel_the_stall_timer(clock: ManualClock) -> None:
    transport = FakeTransport()
    guard = guard_of(transport, clock)

    guard.writing_paused()
    clock.advance(LIMITS.write_timeout - 1)
    guard.writing_resumed()
    clock.advance(LIMITS.write_timeout * 10)

    assert not transport.aborted
    # Each pause starts the whole timeout again.
    guard.writing_paused()
    clock.advance(LIMITS.write_timeout)
    assert transport.aborted


async def test_an_abort_happens_and_is_logged_once(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    transport = FakeTransport()
    transport.buffered = 100
    guard = guard_of(transport, clock)
    guard.writing_paused()
    guard.close()

    with caplog.at_level(logging.INFO, "pushhub.server"):
        guard.abort()
        guard.abort_for("again")
        clock.advance(LIMITS.write_timeout * 10)

    assert len(caplog.records) == 1
    assert clock.pending() == 0


async def test_a_lost_connection_cancels_every_timer(clock: ManualClock) -> None:
    transport = FakeTransport()
    transport.buffered = 100
    guard = guard_of(transport, clock)
    guard.writing_paused()
    guard.close()

    guard.lost()
    guard.abort()

    assert clock.pending() == 0
    assert not transport.aborted


async def test_a_guarded_transport_is_not_wrapped_again(clock: ManualClock) -> None:
    guard = guard_of(FakeTransport(), clock)

    assert TransportGuard.around(guard, cast(asyncio.AbstractEventLoop, clock), LIMITS) is guard


async def test_the_guard_forwards_the_transport_interface(
    clock: ManualClock, harness: Callable[..., Harness]
) -> None:
    transport = FakeTransport()
    guard = guard_of(transport, clock)

    guard.write(b"a")
    guard.writelines([b"b", b"c"])
    guard.pause_reading()
    assert not guard.is_reading()
    guard.resume_reading()
    guard.write_eof()

    assert bytes(transport.written) == b"abc"
    assert transport.reading
    assert transport.eof_written
    assert guard.get_extra_info("peername") == PEER
    assert guard.can_write_eof()


# -- the HTTP protocol -------------------------------------------------------------------


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


class Harness:
    """One connection: uvicorn's Config and server state, our bound protocols, a fake
    transport, the manual clock."""

    def __init__(
        self,
        clock: ManualClock,
        app: Any = ok_app,
        limits: Limits = LIMITS,
        limit_concurrency: int | None = None,
        ping_interval: float | None = 1.0,
        handshakes: Handshakes | None = None,
    ) -> None:
        class Http(PushhubHttpProtocol):
            pass

        Http.handshakes = handshakes or Handshakes(100)

        class WebSocket(PushhubWebSocketProtocol):
            def __init__(
                self, config: Config, server_state: ServerState, app_state: dict[str, Any]
            ) -> None:
                # uvicorn makes it on the upgrade without a loop: give it the clock.
                loop = cast(asyncio.AbstractEventLoop, clock)
                super().__init__(config, server_state, app_state, _loop=loop)

        Http.limits = WebSocket.limits = limits
        self.config = Config(
            app,
            http=Http,
            ws=WebSocket,
            log_config=None,
            lifespan="off",
            proxy_headers=False,
            limit_concurrency=limit_concurrency,
            ws_ping_interval=ping_interval,
            ws_ping_timeout=1.0,
        )
        self.config.load()
        self.state = ServerState()
        self.clock = clock
        self.transport = FakeTransport()
        self.http = Http(self.config, self.state, {}, _loop=cast(asyncio.AbstractEventLoop, clock))
        self.http.connection_made(self.transport)
        self.transport.set_protocol(self.http)

    def send(self, data: bytes) -> None:
        """Bytes from the client, to whichever protocol the transport now has."""
        protocol = self.transport.get_protocol()
        assert isinstance(protocol, asyncio.Protocol)
        protocol.data_received(data)

    @property
    def written(self) -> bytes:
        return bytes(self.transport.written)

    async def finish(self) -> None:
        """End the connection as a lost one and wait for the app, so no task outlives
        the test."""
        if not self.transport.aborted and self.transport.protocol is not None:
            self.transport.protocol.connection_lost(None)
        if self.state.tasks:
            await asyncio.wait_for(asyncio.gather(*self.state.tasks), 2)


@pytest.fixture
async def harness(clock: ManualClock) -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**kwargs: Any) -> Harness:
        made.append(Harness(clock, **kwargs))
        return made[-1]

    yield make
    for h in made:
        await h.finish()


def request(headers_size: int = 0, body: bytes = b"") -> bytes:
    filler = b"x-filler: " + b"a" * headers_size + b"\r\n" if headers_size else b""
    head = b"POST / HTTP/1.1\r\nhost: t\r\n" + filler
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


async def test_an_idle_connection_is_aborted_after_header_timeout(
    clock: ManualClock, harness: Callable[..., Harness]
) -> None:
    h = harness()

    clock.advance(LIMITS.header_timeout - 0.01)
    assert not h.transport.closed
    clock.advance(0.01)

    assert h.transport.aborted


async def test_a_slow_header_sender_is_cut_off_at_the_deadline_from_connect(
    clock: ManualClock,
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    trickle = request()

    # One byte every 250 ms (a step the clock adds up exactly).
    for i in range(int(LIMITS.header_timeout / 0.25) - 1):
        h.send(trickle[i : i + 1])
        clock.advance(0.25)
    assert not h.transport.aborted
    clock.advance(0.25)

    assert h.transport.aborted
    assert h.written == b""


async def test_complete_headers_cancel_the_deadline(
    clock: ManualClock, harness: Callable[..., Harness]
) -> None:
    h = harness(limits=dataclasses.replace(LIMITS, keepalive_timeout=60))

    h.send(request(body=b"{}"))
    await h.transport.until(lambda: h.written.endswith(b"ok"))
    clock.advance(LIMITS.header_timeout * 2)

    assert h.written.startswith(b"HTTP/1.1 200 OK")
    assert not h.transport.closed


async def test_the_next_request_on_a_kept_alive_connection_has_its_own_deadline(
    clock: ManualClock,
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    h.send(request())
    await h.transport.until(lambda: h.written.endswith(b"ok"))

    clock.advance(LIMITS.keepalive_timeout - 1)  # idle, within keep-alive
    h.send(b"\r\n")  # a stray CRLF starts no message, but cancels uvicorn's keep-alive
    clock.advance(LIMITS.header_timeout - 0.01)
    assert not h.transport.closed
    clock.advance(0.01)

    assert h.transport.aborted


async def test_headers_over_the_cap_get_431_and_a_closing_connection(
    clock: ManualClock, harness: Callable[..., Harness]
) -> None:
    h = harness()

    h.send(request(headers_size=LIMITS.max_header_bytes))

    assert h.written.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"connection: close\r\n" in h.written
    assert h.transport.eof_written
    # It reads on and drops what the client still sends, so the answer is not reset
    # away, and gives up after close_timeout.
    h.send(b"x-more: " + b"a" * 1_000_000)
    assert h.written.count(b"HTTP/1.1") == 1
    clock.advance(LIMITS.close_timeout)
    assert h.transport.aborted


async def test_headers_streamed_past_the_cap_are_never_buffered_whole(
    clock: ManualClock,
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    h.send(b"GET / HTTP/1.1\r\nx-big: ")

    for _ in range(100):
        h.send(b"a" * 1024)

    assert h.written.startswith(b"HTTP/1.1 431 ")
    # httptools never saw more than the cap, whatever came after.
    assert h.http._header_bytes == LIMITS.max_header_bytes


async def test_headers_under_the_cap_with_a_body_in_the_same_read_are_served(
    clock: ManualClock,
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    body = b"b" * (LIMITS.max_header_bytes * 4)

    h.send(request(headers_size=LIMITS.max_header_bytes - 200, body=body))
    await h.transport.until(lambda: h.written.endswith(b"ok"))

    assert h.written.startswith(b"HTTP/1.1 200 OK")


async def test_the_cap_is_per_request_on_a_kept_alive_connection(
    clock: ManualClock, harness: Callable[..., Harness]
) -> None:
    h = harness()
    near_cap = request(headers_size=LIMITS.max_header_bytes - 200)

    h.send(near_cap)
    await h.transport.until(lambda: h.written.count(b"ok") == 1)
    h.send(near_cap)
    await h.transport.until(lambda: h.written.count(b"ok") == 2)

    assert h.written.count(b"HTTP/1.1 200 OK") == 2


def upgrade_request() -> bytes:
    client = ClientProtocol(parse_uri("ws://t/ws"))
    client.send_request(client.connect())
    return b"".join(client.data_to_send())


async def test_a_websocket_upgrade_beyond_the_connection_limit_gets_503(
    clock: ManualClock,
    harness: Callable[..., Harness],
) -> None:
    h = harness(limit_concurrency=3)
    h.state.connections.update({object(), object()})  # type: ignore[arg-type]

    h.send(upgrade_request())

    assert h.written.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"retry-after: 1\r\n" in h.written
    assert h.transport.get_protocol() is h.http


class WebSocketApp:
    """Accepts, then records every message it receives and what its sends raise."""

    def __init__(self) -> None:
        self.scope: dict[str, Any] = {}
        self.received: list[dict[str, Any]] = []
        self.send_error: BaseException | None = None
        #: Set: the app waits for ``go``, then sends one frame (``sending`` says when).
        self.go: asyncio.Event | None = None
        self.sending = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        self.scope = scope
        self.received.append(await receive())
        await send({"type": "websocket.accept"})
        if self.go is not None:
            await self.go.wait()
            self.sending.set()
            try:
                await send({"type": "websocket.send", "text": "stuck"})
            except ClientDisconnected as exc:
                self.send_error = exc
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] == "websocket.disconnect":
                return


async def open_websocket(h: Harness, app: WebSocketApp) -> PushhubWebSocketProtocol:
    h.send(upgrade_request())
    await h.transport.until(lambda: b"101 Switching Protocols" in h.written)
    ws = h.transport.get_protocol()
    assert isinstance(ws, PushhubWebSocketProtocol)
    return ws


async def test_the_websocket_protocol_takes_over_the_same_guard(
    clock: ManualClock, harness: Callable[..., Harness]
) -> None:
    app = WebSocketApp()
    h = harness(app=app)

    ws = await open_websocket(h, app)

    assert ws.guard is h.http.guard
    assert ws.close_timeout == LIMITS.close_timeout


async def test_the_app_gets_an_abort_hook_that_resets_the_socket(
    clock: ManualClock, harness: Callable[..., Harness]
) -> None:
    app = WebSocketApp()
    h = harness(app=app)
    await open_websocket(h, app)

    app.scope["extensions"][TRANSPORT_EXTENSION].abort()
    await h.transport.until(lambda: app.received[-1]["type"] == "websocket.disconnect")

    assert h.transport.aborted
    assert h.transport.sock.options  # SO_LINGER 0: a reset


async def test_a_ping_timeout_aborts_at_once_and_the_app_sees_the_disconnect(
    clock: ManualClock,
    harness: Callable[..., Harness],
) -> None:
    app = WebSocketApp()
    h = harness(app=app)
    await open_websocket(h, app)
    h.transport.buffered = 5_000_000  # a dead peer: nothing drains

    clock.advance(1.0)  # ws_ping_interval: the ping goes out
    assert not h.transport.closed
    clock.advance(1.0)  # ws_ping_timeout: no pong
    assert h.transport.aborted
    await h.transport.until(lambda: app.received[-1]["type"] == "websocket.disconnect")


async def test_a_send_waiting_on_a_stalled_socket_raises_once_the_stall_aborts(
    clock: ManualClock,
    harness: Callable[..., Harness],
) -> None:
    app = WebSocketApp()
    app.go = asyncio.Event()
    h = harness(app=app, ping_interval=None)  # no pings: only the stall timer can act
    ws = await open_websocket(h, app)

    ws.pause_writing()  # as the transport does when its buffer passes the high-water mark
    app.go.set()
    # Set right before the send, which then waits in the same step: uvicorn's send
    # waits for the socket to become writable, for ever on its own.
    await asyncio.wait_for(app.sending.wait(), 2)
    clock.advance(LIMITS.write_timeout - 0.01)
    assert not h.transport.aborted
    clock.advance(0.01)

    assert h.transport.aborted
    await h.transport.until(lambda: app.send_error is not None)
    await h.transport.until(lambda: app.received[-1]["type"] == "websocket.disconnect")


async def test_a_websocket_closed_by_the_app_is_aborted_if_the_close_cannot_be_flushed(
    clock: ManualClock,
    harness: Callable[..., Harness],
) -> None:
    app = WebSocketApp()
    h = harness(app=app)
    ws = await open_websocket(h, app)
    h.transport.buffered = 5_000_000

    # uvicorn's close timer (our close_timeout) closes the transport, which cannot flush.
    ws.shutdown()
    clock.advance(LIMITS.close_timeout)

    assert h.transport.aborted
    await h.transport.until(lambda: app.received[-1]["type"] == "websocket.disconnect")


class GatedAccept:
    """Accepts each socket once the test says so."""

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await self.go.wait()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass


async def test_upgrades_past_max_handshakes_in_progress_get_503_until_one_is_done(
    clock: ManualClock, harness: Callable[..., Harness]
) -> None:
    handshakes = Handshakes(2)
    app = GatedAccept()
    first, second = harness(app=app, handshakes=handshakes), harness(app=app, handshakes=handshakes)
    first.send(upgrade_request())
    second.send(upgrade_request())
    await asyncio.sleep(0)
    assert handshakes.in_progress == 2

    third = harness(app=app, handshakes=handshakes)
    third.send(upgrade_request())

    assert third.written.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"retry-after: 1\r\n" in third.written
    assert handshakes.refused == 1

    # One socket lost before the app accepted it, one accepted: both are done.
    second.transport.abort()  # lost, as a reset from the peer would be
    await second.transport.until(lambda: handshakes.in_progress == 1)
    app.go.set()
    await first.transport.until(lambda: b"101 Switching Protocols" in first.written)
    assert handshakes.in_progress == 0
    fourth = harness(app=app, handshakes=handshakes)
    fourth.send(upgrade_request())
    await fourth.transport.until(lambda: b"101 Switching Protocols" in fourth.written)
    assert handshakes.in_progress == 0


async def test_an_accepted_websocket_keeps_no_handshake_headers_and_still_reads_frames(
    clock: ManualClock, harness: Callable[..., Harness]
) -> None:
    app = WebSocketApp()
    h = harness(app=app)
    client = ClientProtocol(parse_uri("ws://t/ws"))
    client.send_request(client.connect())
    h.send(b"".join(client.data_to_send()))
    await h.transport.until(lambda: b"101 Switching Protocols" in h.written)
    ws = h.transport.get_protocol()
    assert isinstance(ws, PushhubWebSocketProtocol)

    # Everything of the handshake that is never read again is let go of.
    assert ws.request is None
    assert ws.response is None
    assert app.scope["headers"] == []
    assert isinstance(ws.queue, server.Inbox)
    assert isinstance(ws.writable, server.Flag)

    client.receive_data(h.written)
    client.send_text(b"hello")
    h.send(b"".join(client.data_to_send()))
    await h.transport.until(lambda: app.received[-1].get("text") == "hello")


async def test_the_inbox_hands_items_over_in_order_and_wakes_its_reader() -> None:
    inbox = server.Inbox()
    assert (inbox.empty(), inbox.qsize()) == (True, 0)
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert (inbox.empty(), inbox.qsize()) == (False, 2)
    assert [await inbox.get(), await inbox.get()] == [1, 2]

    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    inbox.put_nowait(3)
    assert await asyncio.wait_for(reader, 1) == 3
    assert inbox.empty()

    # A reader cancelled while waiting leaves nothing behind.
    cancelled = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cancelled
    inbox.put_nowait(4)
    assert await asyncio.wait_for(inbox.get(), 1) == 4


async def test_the_flag_blocks_waiters_while_clear_and_wakes_them_all_when_set() -> None:
    flag = server.Flag()
    assert await asyncio.wait_for(flag.wait(), 1) is True

    flag.clear()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    gone = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    gone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone

    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]
    assert flag.is_set()


# -- wiring ------------------------------------------------------------------------------


def test_protocols_are_bound_to_the_settings() -> None:
    settings = Settings(close_timeout=0.5, write_timeout=3, header_timeout=4, max_header_bytes=8192)

    http, ws = server.protocols(settings)

    assert issubclass(http, PushhubHttpProtocol)
    assert issubclass(ws, PushhubWebSocketProtocol)
    assert http.limits == ws.limits == Limits.from_settings(settings)
    assert http.limits.close_timeout == 0.5
    assert PushhubHttpProtocol.limits == Limits()  # the base classes keep the defaults


def test_this_uvicorn_has_what_the_server_layer_relies_on() -> None:
    assert server.uvicorn_incompatibility() is None


def test_a_uvicorn_without_those_internals_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(WebSocketsSansIOProtocol, "keepalive_timeout")

    problem = server.uvicorn_incompatibility()

    assert problem is not None
    assert "\n" not in problem
    assert "WebSocketsSansIOProtocol.keepalive_timeout" in problem


class FakeLimits:
    def __init__(self, soft: int, hard: int, settable: int | None = None) -> None:
        self.soft, self.hard, self.settable = soft, hard, settable

    def getrlimit(self, _: int) -> tuple[int, int]:
        return self.soft, self.hard

    def setrlimit(self, _: int, limits: tuple[int, int]) -> None:
        if self.settable is not None and limits[0] > self.settable:
            raise ValueError("not allowed")
        self.soft = limits[0]


def fake_rlimits(monkeypatch: pytest.MonkeyPatch, fake: FakeLimits) -> None:
    import resource

    monkeypatch.setattr(resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", fake.setrlimit)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeLimits(soft=1024, hard=100_000)
    fake_rlimits(monkeypatch, fake)

    assert server.connection_bound(20_000) == 20_000
    assert fake.soft == 100_000
    assert not caplog.records


def test_too_few_descriptors_lower_the_bound_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_rlimits(monkeypatch, FakeLimits(soft=1024, hard=4096))

    with caplog.at_level(logging.WARNING, "pushhub.server"):
        bound = server.connection_bound(20_000)

    assert bound == 4096 - server.FD_RESERVE
    [record] = caplog.records
    assert "4096" in record.getMessage()
    assert "20000" in record.getMessage()


def test_a_refused_raise_keeps_the_soft_limit_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_rlimits(monkeypatch, FakeLimits(soft=1024, hard=4096, settable=1024))

    with caplog.at_level(logging.WARNING, "pushhub.server"):
        assert server.connection_bound(20_000) == 1024 - server.FD_RESERVE
    assert len(caplog.records) == 1


def test_serve_stops_with_one_line_and_exit_code_2_on_a_uvicorn_without_them() -> None:
    # As if uvicorn were upgraded past what the server layer overrides.
    script = (
        "import sys\n"
        "from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol\n"
        "del HttpToolsProtocol.on_message_begin\n"
        "from pushhub.cli import main\n"
        "sys.exit(main(['serve', '--port', '0']))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHHUB_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert "HttpToolsProtocol.on_message_begin" in line
    assert line.startswith("pushhub: uvicorn ")
