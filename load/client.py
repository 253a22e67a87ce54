"""The load clients' WebSocket connection: websockets' asyncio client, data frames fast.

websockets does the handshake, the subscribe sends, pings, pongs and the closing
handshake. Once the connection is open, incoming bytes go through ``FrameSplitter``:
data frames straight to the worker's ``Sink`` (no ``recv()``, no queue), control frames
back to websockets at a frame boundary. See ``load.frames`` for why.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State

from load.frames import FrameError, FrameSplitter
from load.ledger import OPEN

if TYPE_CHECKING:
    from load.worker import ConnectOrder


class Slot:
    """One load client across its connections: its channel, how it was ordered to
    connect, and its backoff attempt count (kept across reconnects)."""

    __slots__ = ("attempt", "began", "channel", "order")

    def __init__(self, channel: int, order: ConnectOrder) -> None:
        self.channel = channel
        self.order = order
        self.attempt = 0
        #: time.perf_counter() when its first attempt began (past the concurrency gate).
        self.began = 0.0


class Sink(Protocol):
    """Where a worker's connections deliver what they receive."""

    def on_data(self, client: LoadConnection, payload: bytes) -> None: ...

    def on_lost(self, client: LoadConnection) -> None: ...


class LoadConnection(ClientConnection):
    #: The worker that owns every connection of this process.
    sink: ClassVar[Sink | None] = None

    def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
        super().__init__(protocol, **kwargs)
        self._splitter = FrameSplitter(self._on_data, self._on_control)
        #: Resolved by the "subscribed" reply (or failed by an "error" reply).
        self.pending: asyncio.Future[None] | None = None
        self.channel = -1
        #: True once this side starts closing: the close is then not the server's doing.
        self.leaving = False
        self.slot: Slot | None = None
        #: When the "subscribed" reply arrived (time.time_ns), 0 before.
        self.confirmed_ns = 0
        #: Messages count when their publish time is in [window_start, window_end).
        self.windowed = False
        self.window_start = 0
        self.window_end = OPEN

    def data_received(self, data: bytes) -> None:
        if self.response is None or self.protocol.state is not State.OPEN:
            super().data_received(data)
            return
        try:
            self._splitter.feed(data)
        except FrameError as exc:
            self.set_connection_exc(exc)
            self.transport.abort()

    def _on_control(self, frame: bytes) -> None:
        super().data_received(frame)

    def _on_data(self, payload: bytes) -> None:
        if self.sink is not None:
            self.sink.on_data(self, payload)

    def process_event(self, event: Event) -> None:
        # Frames that arrived in the same read as the handshake response are parsed by
        # websockets itself; route their data the same way as the fast path does.
        if (
            self.response is not None
            and isinstance(event, Frame)
            and event.opcode in (Opcode.TEXT, Opcode.BINARY)
        ):
            self._on_data(bytes(event.data))
            return
        super().process_event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.pending is not None and not self.pending.done():
            self.pending.set_exception(ConnectionError("closed before subscribed"))
        if self.sink is not None:
            self.sink.on_lost(self)


async def open_connection(url: str, open_timeout: float) -> LoadConnection:
    """Open one connection with the settings pushhub uses: no compression, no proxy."""
    ws = await connect(
        url,
        create_connection=LoadConnection,
        compression=None,
        proxy=None,
        open_timeout=open_timeout,
        # The server pings; a client ping per connection would be load of our own making.
        ping_interval=None,
        close_timeout=2,
        max_size=None,
        user_agent_header=None,
    )
    assert isinstance(ws, LoadConnection)
    return ws
